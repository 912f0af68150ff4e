"""Request and response bodies. Requests forbid unknown fields (a member cannot
slip `subject`, `seq`, `recorded_at` or `scope` into a body); responses are what
the routes return, documented in the OpenAPI schema."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from consentgate.ledger.batch import MAX_BATCH

MAX_DECISIONS = 10_000
Id = Field(min_length=1, max_length=256)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EventsIn(Strict):
    events: list[dict[str, Any]] = Field(
        min_length=1, max_length=MAX_BATCH, description="events (docs/formats.md)"
    )


class EventsOut(BaseModel):
    received: int
    added: int
    event_ids: list[str]
    size: int


def _printable(value: str) -> str:
    if not value.isprintable() or value.isspace():
        raise ValueError("printable text")
    return value


#: A member id in a request: 1 to 256 printable characters.
SubjectId = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_printable)]


class DecisionsIn(Strict):
    purpose: str = Id
    subjects: list[SubjectId] = Field(min_length=1, max_length=MAX_DECISIONS)
    at: str | None = Field(default=None, description="RFC 3339 instant with a zone; default now")


class DecisionOut(BaseModel):
    subject: str
    allowed: bool
    reason: str


class DecisionsOut(BaseModel):
    purpose: str
    at: str
    decisions: list[DecisionOut]


class SessionIn(Strict):
    subject: str = Id
    ttl_seconds: int | None = Field(default=None, gt=0)


class SessionOut(BaseModel):
    token: str
    subject: str
    expires: str


class ProfileOut(BaseModel):
    subject: str
    region: str | None
    birth_date: str | None
    erased: bool
    events: int


class ChoiceOut(BaseModel):
    purpose: str
    title: str
    choice: str | None
    chosen_at: str | None
    allowed: bool
    reason: str


class ChoiceIn(Strict):
    choice: Literal["granted", "withdrawn", "refused"]


class HistoryOut(BaseModel):
    subject: str
    events: list[dict[str, str]]


class SubjectOut(BaseModel):
    profile: ProfileOut
    choices: list[ChoiceOut]


class PolicyIn(Strict):
    toml: str = Field(min_length=1, max_length=1_000_000)
    effective: str | None = Field(default=None, description="RFC 3339 instant with a zone")


class PolicyOut(BaseModel):
    id: int
    version: str
    sha256: str
    effective: str
    applied: str
    purposes: list[str]
    toml: str


class AuditOut(BaseModel):
    id: int
    at: str
    actor: str
    action: str
    subject: int | None
    detail: str


class GpcOut(BaseModel):
    gpc: bool
    lastUpdate: str
