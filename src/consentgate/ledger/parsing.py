"""Lines of JSON to ledger rows: the CPU-bound half of an import.

Runs in worker processes for large files, so it imports only the domain and orjson,
and reports a bad line as a picklable `LineError` value instead of raising.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any, NamedTuple

import orjson

from consentgate.domain.errors import EventError, InputError, UnknownPurposeError
from consentgate.domain.events import ValidEvent, validate_event
from consentgate.domain.timeutil import to_micros
from consentgate.ledger.chain import entry_parts
from consentgate.ledger.rows import id_key
from consentgate.ledger.sealing import PERSONAL, pseudonym

__all__ = ["ChunkResult", "LineError", "Row", "canonical", "parse_lines", "row_of", "set_context"]

Row = tuple[Any, ...]


class LineError(NamedTuple):
    """The first bad line of a chunk."""

    lineno: int
    field: str
    expected: str
    found: object
    unknown_purpose: bool = False

    def error(self, name: str) -> InputError:
        """The exception to raise, located at `name:lineno`."""
        cls = UnknownPurposeError if self.unknown_purpose else EventError
        return cls(self.field, self.expected, self.found).located(f"{name}:{self.lineno}")


ChunkResult = tuple[list[int], list[Row]] | LineError

_purposes: Collection[str] = frozenset()
_secret = b""


def set_context(purposes: Collection[str], secret: bytes) -> None:
    """Set the purposes consent events may name and the ledger's pseudonym key
    (a worker-process initializer)."""
    global _purposes, _secret
    _purposes = purposes
    _secret = secret


def canonical(body: dict[str, str]) -> bytes:
    """The canonical bytes of a validated body (docs/formats.md), by orjson: sorted
    keys, no spaces, UTF-8 kept; the same bytes as the domain's own encoder for every
    body validation lets through (printable strings need only quote and backslash
    escapes, which both write alike), as tests/ledger/test_parsing.py checks."""
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def row_of(valid: ValidEvent, secret: bytes, recorded_us: int = 0) -> Row:
    """The parsed row of a validated event (`rows.PARSED` order): what the writer
    needs to seal, chain and store it."""
    body = valid.body
    personal = {name: body[name] for name in PERSONAL if name in body}
    subject = body["subject"]
    key = id_key(valid.event_id)
    ps = pseudonym(secret, subject)
    at_us = to_micros(valid.at)
    get = body.get
    purpose, choice, signal = get("purpose"), get("choice"), get("signal")
    source, notice = get("source"), get("notice_version")
    head, tail = entry_parts(
        secret, key, valid.event_id, valid.digest, valid.type, ps, at_us, purpose, choice,
        signal, source, notice, recorded_us,
    )  # fmt: skip
    return (
        key,
        valid.event_id,
        valid.digest,
        valid.type,
        subject,
        ps,
        at_us,
        purpose,
        choice,
        signal,
        source,
        notice,
        get("region"),
        get("birth_date"),
        orjson.dumps(personal, option=orjson.OPT_SORT_KEYS) if personal else None,
        recorded_us,
        head,
        tail,
    )


def parse_lines(task: tuple[int, bytes]) -> ChunkResult:
    """Validate a block of lines starting at line number `task[0]`; skip blank lines."""
    first, block = task
    lines = block.split(b"\n")
    linenos: list[int] = []
    rows: list[Row] = []
    now = time.time_ns() // 1_000
    for offset, raw in enumerate(lines):
        if not raw.strip():
            continue
        lineno = first + offset
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            return LineError(lineno, "(line)", "one JSON object per line", str(err))
        try:
            rows.append(
                row_of(validate_event(obj, purposes=_purposes, encode=canonical), _secret, now)
            )
        except InputError as err:
            unknown = isinstance(err, UnknownPurposeError)
            return LineError(lineno, err.field, err.expected, _plain(err.found), unknown)
        linenos.append(lineno)
    return linenos, rows


def _plain(value: object) -> object:
    """A value that pickles and prints (JSON values already do)."""
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
