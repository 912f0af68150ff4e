"""Who may call the HTTP API: API keys (hashed, scoped, revocable), short-lived
member session tokens, the audit log of staff reads, and per-caller rate limits.

The stores live in the ledger's database (migration 0004); the API, the web pages
and the CLI use them through these functions, never through the tables.
"""

from consentgate.access.audit import AuditEntry, audit_entries, write_audit
from consentgate.access.keys import SCOPES, ApiKey, KeyStore, NewKey
from consentgate.access.ratelimit import RateLimiter
from consentgate.access.tokens import MemberSession, TokenError, issue_token, read_token

__all__ = [
    "SCOPES",
    "ApiKey",
    "AuditEntry",
    "KeyStore",
    "MemberSession",
    "NewKey",
    "RateLimiter",
    "TokenError",
    "audit_entries",
    "issue_token",
    "read_token",
    "write_audit",
]
