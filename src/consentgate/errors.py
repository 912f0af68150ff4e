"""Public home of consentgate's exception tree (defined in `consentgate.domain.errors`)."""

from consentgate.domain.errors import (
    ConsentGateError,
    EventError,
    InputError,
    PolicyError,
    StorageError,
    UnknownPurposeError,
)

__all__ = [
    "ConsentGateError",
    "EventError",
    "InputError",
    "PolicyError",
    "StorageError",
    "UnknownPurposeError",
]
