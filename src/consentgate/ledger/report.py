"""What `verify` found: its problems, each at the event it concerns."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Problem", "VerifyReport"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing that does not verify; `seq` is the event it concerns, if any."""

    seq: int | None
    what: str

    def __str__(self) -> str:
        return self.what if self.seq is None else f"seq {self.seq}: {self.what}"


@dataclass(slots=True)
class VerifyReport:
    events: int = 0
    checkpoints: int = 0  # stored checkpoints whose root was re-computed
    external: int = 0  # external checkpoints checked
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad(self) -> Problem | None:
        """The problem at the lowest position (problems without one come last)."""
        with_seq = [p for p in self.problems if p.seq is not None]
        if with_seq:
            return min(with_seq, key=lambda p: p.seq or 0)
        return self.problems[0] if self.problems else None
