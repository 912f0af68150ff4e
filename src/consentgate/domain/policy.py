"""Policy values: purposes, jurisdictions, notices and policy versions (DESIGN §4).

A `Policy` answers the jurisdiction questions of the decision rule: the mode of a
purpose in a region, whether GPC is honoured there, which notice is in force, when
re-consent was last required and when disclosure of a purpose began. A
`PolicyHistory` holds the applied versions and picks the one in force at an instant.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Literal

from consentgate.domain.regions import lookup_chain

__all__ = [
    "MODES",
    "MODE_RANK",
    "Jurisdiction",
    "Mode",
    "Notice",
    "Policy",
    "PolicyHistory",
    "Purpose",
    "stricter",
]

Mode = Literal["excluded", "opt_in", "opt_out"]
MODES: Final = ("excluded", "opt_in", "opt_out")
MODE_RANK: Final[dict[str, int]] = {"opt_out": 0, "opt_in": 1, "excluded": 2}


def stricter(a: Mode, b: Mode) -> Mode:
    """The stricter of two modes: excluded > opt_in > opt_out."""
    return a if MODE_RANK[a] >= MODE_RANK[b] else b


@dataclass(frozen=True, slots=True)
class Purpose:
    """A named use of personal data and its per-region modes."""

    name: str
    title: str
    modes: Mapping[str, Mode]
    notice_window: timedelta = timedelta(0)
    eligible_sources: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Jurisdiction:
    """Settings of one region entry; `None` means "not set here, ask the next entry"."""

    honor_gpc: bool | None = None
    request_deadline_days: int | None = None


@dataclass(frozen=True, slots=True)
class Notice:
    """A privacy-policy version: when it took effect and what it discloses."""

    version: str
    effective: datetime
    purposes: frozenset[str]
    reconsent: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Policy:
    """One policy version. Notices are kept sorted by `effective`."""

    version: str
    min_age: int
    purposes: Mapping[str, Purpose]
    jurisdictions: Mapping[str, Jurisdiction]
    notices: tuple[Notice, ...] = ()
    effective: datetime | None = None
    sha256: str = ""
    source_text: str = field(default="", repr=False, compare=False)

    def mode(self, purpose: str, region: str | None) -> Mode:
        """Mode of `purpose` in `region` along the lookup chain; unset -> excluded."""
        modes = self.purposes[purpose].modes
        for entry in lookup_chain(region):
            if entry in modes:
                return modes[entry]
        return "excluded"

    def honor_gpc(self, region: str | None) -> bool:
        """Whether GPC is honoured in `region`; unset anywhere -> honoured (restrictive)."""
        value = self._setting(region, "honor_gpc")
        return True if value is None else bool(value)

    def request_deadline_days(self, region: str | None) -> int | None:
        """Days to answer an access or erasure request from `region`."""
        value = self._setting(region, "request_deadline_days")
        return None if value is None else int(value)

    def _setting(self, region: str | None, name: str) -> bool | int | None:
        for entry in lookup_chain(region):
            juris = self.jurisdictions.get(entry)
            if juris is not None and (value := getattr(juris, name)) is not None:
                return value  # type: ignore[no-any-return]
        return None

    def notice_index(self, at: datetime) -> int:
        """Index of the notice in force at `at` (latest effective <= at), or -1."""
        return bisect_right([n.effective for n in self.notices], at) - 1

    def notice_in_force(self, at: datetime) -> Notice | None:
        i = self.notice_index(at)
        return self.notices[i] if i >= 0 else None

    def reconsent_cutoff(self, purpose: str, at: datetime) -> datetime | None:
        """R: the latest effective time among notices in force by `at` requiring
        re-consent for `purpose`; grants before R are invalid. None: all grants valid."""
        cutoff = None
        for notice in self.notices[: self.notice_index(at) + 1]:
            if purpose in notice.reconsent:
                cutoff = notice.effective
        return cutoff

    def disclosure_start(self, purpose: str, at: datetime) -> datetime | None:
        """D: start of the unbroken run of notices listing `purpose` that ends with
        the notice in force at `at`; None when that notice does not list it."""
        i = self.notice_index(at)
        start = None
        while i >= 0 and purpose in self.notices[i].purposes:
            start = self.notices[i].effective
            i -= 1
        return start


class PolicyHistory:
    """Applied policy versions, each effective from its own instant (DESIGN §4)."""

    def __init__(self, versions: Sequence[tuple[datetime, Policy]]) -> None:
        if not versions:
            raise ValueError("a policy history needs at least one version")
        ordered = sorted(enumerate(versions), key=lambda item: (item[1][0], item[0]))
        self._starts = [start for _, (start, _) in ordered]
        self._policies = [policy for _, (_, policy) in ordered]

    def in_force(self, at: datetime) -> Policy:
        """The version with the latest start <= `at`; the earliest if none started yet."""
        i = bisect_right(self._starts, at) - 1
        return self._policies[max(i, 0)]

    @property
    def latest(self) -> Policy:
        return self._policies[-1]

    def __iter__(self) -> Iterator[tuple[datetime, Policy]]:
        return iter(zip(self._starts, self._policies, strict=True))
