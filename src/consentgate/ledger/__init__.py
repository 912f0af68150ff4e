"""The event store: SQLAlchemy Core on SQLite (default) or PostgreSQL."""

from consentgate.ledger.database import DEFAULT_URL
from consentgate.ledger.importer import ImportResult
from consentgate.ledger.store import AppliedPolicy, Ledger, open_ledger

__all__ = ["DEFAULT_URL", "AppliedPolicy", "ImportResult", "Ledger", "open_ledger"]
