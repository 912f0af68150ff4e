"""The policy file (TOML, DESIGN §4): parsing, validation that lists every problem,
and the default policy shipped with the package."""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, cast

from consentgate.domain.errors import PolicyError
from consentgate.domain.policy import MODES, Jurisdiction, Mode, Notice, Policy, Purpose
from consentgate.domain.regions import is_known_region

__all__ = ["default_policy_text", "load_policy", "parse_policy"]

# A purpose that names no window gets the protective default of DESIGN §4.
DEFAULT_NOTICE_WINDOW_DAYS = 30

_TOP = {"policy", "purposes", "jurisdictions", "notices"}
_POLICY_KEYS = {"version", "min_age", "effective"}
_PURPOSE_KEYS = {"title", "notice_window_days", "eligible_sources", "modes"}
_JURIS_KEYS = {"honor_gpc", "request_deadline_days"}
_NOTICE_KEYS = {"version", "effective", "purposes", "reconsent"}


def default_policy_text() -> str:
    """The TOML of the default policy shipped with consentgate."""
    return resources.files("consentgate").joinpath("default_policy.toml").read_text("utf-8")


def load_policy(path: str) -> Policy:
    """Read and validate a policy file."""
    with open(path, "rb") as fh:
        return parse_policy(fh.read().decode("utf-8"))


def parse_policy(text: str) -> Policy:
    """Parse and validate policy TOML; raise `PolicyError` listing every problem."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise PolicyError([f"not valid TOML: {err}"]) from None
    checker = _Checker()
    policy = checker.policy(doc, text)
    if checker.problems:
        raise PolicyError(checker.problems)
    assert policy is not None
    return policy


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def bad(self, where: str, expected: str, found: object) -> None:
        self.problems.append(f"{where}: expected {expected}, found {found!r}")

    def unknown_keys(self, where: str, table: Mapping[str, Any], known: set[str]) -> None:
        for key in table:
            if key not in known:
                self.bad(f"{where}.{key}", "one of " + ", ".join(sorted(known)), key)

    def table(self, doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = doc.get(key, {})
        if not isinstance(value, dict):
            self.bad(key, "a table", value)
            return {}
        return value

    def instant(self, where: str, value: object) -> datetime | None:
        if not isinstance(value, datetime):
            self.bad(where, "a TOML date-time with timezone, e.g. 2024-09-18T00:00:00Z", value)
            return None
        if value.tzinfo is None:
            self.bad(where, "a date-time with timezone (add Z or +hh:mm)", value.isoformat())
            return None
        return value.astimezone(UTC)

    def policy(self, doc: Mapping[str, Any], text: str) -> Policy | None:
        self.unknown_keys("(top level)", doc, _TOP)
        head = self.table(doc, "policy")
        self.unknown_keys("policy", head, _POLICY_KEYS)
        version = head.get("version")
        if not isinstance(version, str) or not version.strip():
            self.bad("policy.version", "a non-empty string", version)
        min_age = head.get("min_age", 18)
        if type(min_age) is not int or not 0 <= min_age <= 150:
            self.bad("policy.min_age", "a whole number from 0 to 150", min_age)
        effective = None
        if "effective" in head:
            effective = self.instant("policy.effective", head["effective"])
        purposes = self.purposes(self.table(doc, "purposes"))
        jurisdictions = self.jurisdictions(self.table(doc, "jurisdictions"))
        notices = self.notices(doc.get("notices", []), set(purposes))
        if self.problems:
            return None
        return Policy(
            version=cast(str, version),
            min_age=cast(int, min_age),
            purposes=purposes,
            jurisdictions=jurisdictions,
            notices=notices,
            effective=effective,
            sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
            source_text=text,
        )

    def purposes(self, table: Mapping[str, Any]) -> dict[str, Purpose]:
        if not table:
            self.bad("purposes", "at least one purpose", {})
        out = {}
        for name, spec in table.items():
            where = f"purposes.{name}"
            if not isinstance(spec, dict):
                self.bad(where, "a table", spec)
                continue
            self.unknown_keys(where, spec, _PURPOSE_KEYS)
            title = spec.get("title", name)
            if not isinstance(title, str):
                self.bad(f"{where}.title", "a string", title)
            days = spec.get("notice_window_days", DEFAULT_NOTICE_WINDOW_DAYS)
            if type(days) is not int or days < 0:
                self.bad(f"{where}.notice_window_days", "a whole number >= 0", days)
                days = 0
            sources = spec.get("eligible_sources")
            if sources is not None and (
                not isinstance(sources, list) or not all(isinstance(s, str) for s in sources)
            ):
                self.bad(f"{where}.eligible_sources", "a list of strings", sources)
                sources = None
            out[name] = Purpose(
                name=name,
                title=str(title),
                modes=self.modes(where, spec.get("modes")),
                notice_window=timedelta(days=days),
                eligible_sources=None if sources is None else frozenset(sources),
            )
        return out

    def modes(self, where: str, table: object) -> dict[str, Mode]:
        if not isinstance(table, dict):
            self.bad(f"{where}.modes", "a table of region = mode", table)
            return {}
        out: dict[str, Mode] = {}
        for region, mode in table.items():
            if not is_known_region(region):
                self.bad(f"{where}.modes", "an ISO 3166 region code, EEA or *", region)
            if mode not in MODES:
                self.bad(f"{where}.modes.{region}", "one of " + ", ".join(MODES), mode)
                continue
            out[region] = mode
        if "*" not in table:
            self.bad(f"{where}.modes", 'an entry for "*" (every other region)', sorted(table))
        return out

    def jurisdictions(self, table: Mapping[str, Any]) -> dict[str, Jurisdiction]:
        out = {}
        for region, spec in table.items():
            where = f"jurisdictions.{region}"
            if not is_known_region(region):
                self.bad("jurisdictions", "an ISO 3166 region code, EEA or *", region)
            if not isinstance(spec, dict):
                self.bad(where, "a table", spec)
                continue
            self.unknown_keys(where, spec, _JURIS_KEYS)
            gpc = spec.get("honor_gpc")
            if gpc is not None and not isinstance(gpc, bool):
                self.bad(f"{where}.honor_gpc", "true or false", gpc)
            days = spec.get("request_deadline_days")
            if days is not None and (type(days) is not int or days <= 0):
                self.bad(f"{where}.request_deadline_days", "a whole number > 0", days)
            out[region] = Jurisdiction(honor_gpc=gpc, request_deadline_days=days)
        star = out.get("*")
        if star is None or star.honor_gpc is None or star.request_deadline_days is None:
            self.bad(
                'jurisdictions."*"',
                "honor_gpc and request_deadline_days set for every other region",
                star,
            )
        return out

    def notices(self, items: object, purposes: set[str]) -> tuple[Notice, ...]:
        if not isinstance(items, list):
            self.bad("notices", "an array of tables [[notices]]", items)
            return ()
        out: list[Notice] = []
        for i, spec in enumerate(items):
            where = f"notices[{i}]"
            if not isinstance(spec, dict):
                self.bad(where, "a table", spec)
                continue
            self.unknown_keys(where, spec, _NOTICE_KEYS)
            version = spec.get("version")
            if not isinstance(version, str) or not version:
                self.bad(f"{where}.version", "a non-empty string", version)
            effective = self.instant(f"{where}.effective", spec.get("effective"))
            listed = self.purpose_list(f"{where}.purposes", spec.get("purposes", []), purposes)
            again = self.purpose_list(f"{where}.reconsent", spec.get("reconsent", []), purposes)
            if effective is not None and isinstance(version, str):
                out.append(Notice(str(version), effective, listed, again))
        self.unique(out)
        return tuple(sorted(out, key=lambda n: n.effective))

    def unique(self, notices: list[Notice]) -> None:
        seen_versions: set[str] = set()
        seen_times: set[datetime] = set()
        for n in notices:
            if n.version in seen_versions:
                self.bad("notices", "unique notice versions", n.version)
            if n.effective in seen_times:
                self.bad("notices", "unique effective times", n.effective.isoformat())
            seen_versions.add(n.version)
            seen_times.add(n.effective)

    def purpose_list(self, where: str, value: object, purposes: set[str]) -> frozenset[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.bad(where, "a list of purpose names", value)
            return frozenset()
        for name in value:
            if name not in purposes:
                self.bad(where, "purposes defined under [purposes]: " + ", ".join(purposes), name)
        return frozenset(value)
