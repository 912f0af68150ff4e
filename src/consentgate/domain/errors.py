"""The exceptions consentgate raises, in one tree.

::

    ConsentGateError                 every error the library raises on purpose
    ├── InputError                   bad input: nothing was changed (CLI exit 2, HTTP 422)
    │   ├── EventError               an event that fails validation (line-precise on import)
    │   ├── PolicyError              a policy file that fails validation (lists every problem)
    │   └── UnknownPurposeError      a purpose the policy in force does not define
    └── StorageError                 the ledger database cannot be opened or used

Every message says which field was wrong, what was expected and what was found.
"""

from __future__ import annotations

__all__ = [
    "ConsentGateError",
    "EventError",
    "InputError",
    "PolicyError",
    "StorageError",
    "UnknownPurposeError",
]


class ConsentGateError(Exception):
    """Base of every error consentgate raises on purpose."""


class InputError(ConsentGateError, ValueError):
    """Input that cannot be accepted; the operation changed nothing."""

    def __init__(self, field: str, expected: str, found: object, *, where: str = "") -> None:
        self.field = field
        self.expected = expected
        self.found = found
        self.where = where
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}field {field!r}: expected {expected}, found {found!r}")

    def located(self, where: str) -> InputError:
        """The same error, said of a place (a file and line, a request item)."""
        err = type(self).__new__(type(self))
        InputError.__init__(err, self.field, self.expected, self.found, where=where)
        return err


class EventError(InputError):
    """An event that fails validation."""


class UnknownPurposeError(InputError):
    """A purpose that the policy in force does not define."""


class PolicyError(ConsentGateError, ValueError):
    """A policy that fails validation; `problems` lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        listed = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"policy rejected, {len(self.problems)} problem(s):\n{listed}")


class StorageError(ConsentGateError):
    """The ledger database cannot be opened or used."""
