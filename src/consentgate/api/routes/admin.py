"""Staff routes (`admin` scope): the policy and its history, applying a new
version, a member's record, and the audit log. Every read of a member's data is
written to the audit log before it is answered."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response

from consentgate import members
from consentgate.access import audit_entries, write_audit
from consentgate.api.routes.render import choice_body, history_body, json_response, profile_body
from consentgate.api.schemas import AuditOut, HistoryOut, PolicyIn, PolicyOut, SubjectOut
from consentgate.api.security import Access, KeyCaller, guard
from consentgate.api.services import Services, services
from consentgate.domain.timeutil import format_ts, parse_ts
from consentgate.ledger import AppliedPolicy

router = APIRouter(tags=["admin"])
Svc = Annotated[Services, Depends(services)]
SubjectId = Annotated[str, Path(min_length=1, max_length=256)]


def _policy_body(a: AppliedPolicy) -> dict[str, Any]:
    return {
        "id": a.id,
        "version": a.policy.version,
        "sha256": a.policy.sha256,
        "effective": format_ts(a.effective),
        "applied": format_ts(a.applied),
        "purposes": sorted(a.policy.purposes),
        "toml": a.policy.source_text,
    }


@router.get("/v1/policy", response_model=PolicyOut, **guard(Access.ADMIN))
def get_policy(svc: Svc) -> Response:
    """The policy version in force now."""
    return json_response(_policy_body(svc.ledger.applied_policy_at()))


@router.get("/v1/policy/versions", response_model=list[PolicyOut], **guard(Access.ADMIN))
def get_policy_versions(svc: Svc) -> Response:
    """Every applied version, oldest first."""
    return json_response([_policy_body(a) for a in svc.ledger.policies()])


@router.post("/v1/policy", response_model=PolicyOut, status_code=201, **guard(Access.ADMIN))
def post_policy(body: PolicyIn, caller: KeyCaller, svc: Svc) -> Response:
    """Validate and apply a new policy version (the same checks as `policy apply`);
    an invalid one is refused with every problem listed and changes nothing."""
    effective = None if body.effective is None else parse_ts(body.effective, field="effective")
    applied = svc.ledger.apply_policy(body.toml, effective=effective)
    write_audit(
        svc.ledger.engine,
        actor=caller.actor,
        action="apply_policy",
        detail=f"version {applied.policy.version} sha256 {applied.policy.sha256}",
    )
    return json_response(_policy_body(applied), status=201)


@router.get("/v1/subjects/{subject}", response_model=SubjectOut, **guard(Access.ADMIN))
def get_subject(subject: SubjectId, caller: KeyCaller, svc: Svc) -> Response:
    """A member's profile and choices (audited)."""
    _audit_read(svc, caller.actor, subject, "read_subject")
    profile, choices = members.overview(svc.ledger, subject)
    return json_response(
        {"profile": profile_body(profile), "choices": [choice_body(c) for c in choices]}
    )


@router.get("/v1/subjects/{subject}/history", response_model=HistoryOut, **guard(Access.ADMIN))
def get_subject_history(subject: SubjectId, caller: KeyCaller, svc: Svc) -> Response:
    """Every event of a member (audited)."""
    _audit_read(svc, caller.actor, subject, "read_history")
    return json_response(history_body(subject, svc.ledger.history(subject)))


@router.get("/v1/audit", response_model=list[AuditOut], **guard(Access.ADMIN))
def get_audit(
    svc: Svc,
    subject: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    """The newest audit entries (of one member when `subject` is given)."""
    ps = None if subject is None else svc.ledger.pseudonym(subject)
    entries = audit_entries(svc.ledger.engine, subject=ps, limit=limit)
    return json_response(
        [
            {
                "id": e.id,
                "at": format_ts(e.at),
                "actor": e.actor,
                "action": e.action,
                "subject": e.subject,
                "detail": e.detail,
            }
            for e in entries
        ]
    )


def _audit_read(svc: Services, actor: str, subject: str, action: str) -> None:
    write_audit(
        svc.ledger.engine, actor=actor, action=action, subject=svc.ledger.pseudonym(subject)
    )
