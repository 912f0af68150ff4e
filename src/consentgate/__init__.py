"""consentgate: decide which members' data may train AI models, enforce it, prove it."""

from consentgate import gate
from consentgate.domain.decide import REASONS, Decision, Record, decide
from consentgate.errors import (
    ConsentGateError,
    EventError,
    InputError,
    PolicyError,
    StorageError,
    UnknownPurposeError,
)
from consentgate.ledger import DEFAULT_URL, ImportResult, Ledger
from consentgate.ledger import open_ledger as open

__all__ = [
    "DEFAULT_URL",
    "REASONS",
    "ConsentGateError",
    "Decision",
    "EventError",
    "ImportResult",
    "InputError",
    "Ledger",
    "PolicyError",
    "Record",
    "StorageError",
    "UnknownPurposeError",
    "decide",
    "gate",
    "open",
]

__version__ = "0.1.0"
