"""A deterministic synthetic member population, as consent-ledger events.

The demo, the benchmarks and the tests need a platform that looks real: members in many
jurisdictions, a disclosure notice followed by a material change that requires re-consent,
opt-outs, opt-ins, refusals, GPC signals, movers, minors who grow up, late erasures and a
few brand-new members. :func:`generate_population` produces all of it from one seed, with
the standard library only, and fast: times are integer seconds since the Unix epoch, drawn
with one :class:`random.Random`, and formatted through a per-day cache at the very end.

Events follow DESIGN §5 (``profile``, ``consent``, ``signal``, ``erasure``); every value is
a string, so each event is a ``dict[str, str]`` ready for :func:`json.dumps`.
"""

from __future__ import annotations

import calendar
import json
import time
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from datetime import date
from itertools import accumulate
from pathlib import Path
from random import Random

__all__ = [
    "NOTICE_DISCLOSURE",
    "NOTICE_RECONSENT",
    "generate_population",
    "write_events_jsonl",
]

NOTICE_DISCLOSURE = "2024-06-26"
"""Notice disclosing ``ai_training`` and ``genai_features``; effective 2024-06-26T00:00:00Z."""
NOTICE_RECONSENT = "2025-05-27"
"""Notice requiring re-consent for ``ai_training``; effective 2025-05-27T00:00:00Z."""

AI_TRAINING = "ai_training"
GENAI_FEATURES = "genai_features"


def _epoch(year: int, month: int, day: int) -> int:
    return calendar.timegm((year, month, day, 0, 0, 0, 0, 0, 0))


_DAY = 86_400
_JOIN_START = _epoch(2019, 1, 1)
_JOIN_END = _epoch(2025, 7, 1)  # exclusive: the last joins happen on 2025-06-30
_GPC_START = _epoch(2021, 1, 1)  # browsers shipped Global Privacy Control from late 2020
_DISCLOSURE_AT = _epoch(2024, 6, 26)
_RECONSENT_AT = _epoch(2025, 5, 27)
_ERASURE_START = _epoch(2025, 1, 1)
_END = _epoch(2025, 10, 1)  # exclusive: the timeline ends on 2025-09-30
_CAMPAIGN = 30 * _DAY  # notice e-mails drive a wave of choices in the following days
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()

# Minors: born so that they are under 18 somewhere in 2024-2025; those born in 2007 turn 18
# during 2025, so part of their content was written as a child. They joined at 13 or older.
_MINOR_BIRTH_FIRST = date(2006, 7, 1).toordinal()
_MINOR_BIRTH_LAST = date(2011, 6, 30).toordinal()
_DAYS_13_YEARS = 4_750  # 13 x 365.25 days, rounded up: never younger than 13 at join
_DAYS_18_YEARS = 6_576  # 18 x 365.25 days, rounded up: adults are 18 or older at join
_DAYS_PER_YEAR = 365.2425
# Adult age at join: (first year of the bracket, years in it, weight), a social-network mix.
_ADULT_AGES = ((18, 7, 0.20), (25, 10, 0.30), (35, 10, 0.20), (45, 10, 0.14), (55, 10, 0.10))
_ADULT_AGES_OLDEST = (65, 20, 0.06)

# Shares of members (the realism contract of the demo; checked by tests/test_synthetic.py).
_P_MINOR = 0.04
_P_UNKNOWN_REGION = 0.05
_P_MOVER = 0.03 / (1 - _P_UNKNOWN_REGION)  # ~3% of all members; unknown-region never move
_P_ERASURE = 0.01
_P_GENAI = 0.05
_P_EVIDENCE = 0.30
_P_SIGNUP_CHOICE = 0.5  # members who joined after the disclosure often choose at signup
_P_CAMPAIGN = 0.35  # choices made from the notice e-mail, in the month after a notice
# Opt-out regions (US, BR): withdrawals, re-grants after a withdrawal, explicit grants.
_P_OPTOUT_WITHDRAW = 0.12
_P_OPTOUT_REGRANT = 0.20
_P_OPTOUT_GRANT = 0.02
# Opt-in regions (everyone else): grants, refusals, re-consent after the material change.
_P_OPTIN_GRANT = 0.25
_P_OPTIN_REFUSE = 0.10
_P_RECONSENT = 0.40
_P_WITHDRAW_AFTER_GRANT = 0.10
_P_GRANT_AFTER_REFUSAL = 0.12
_P_GPC = {
    "us": 0.08,
    "eea": 0.03,
    "gb": 0.03,
    "ch": 0.02,
    "ca": 0.02,
    "br": 0.02,
    "in": 0.01,
    "other": 0.01,
    "unknown": 0.01,
}

_US = {
    "US-CA": 12.0,
    "US-TX": 9.0,
    "US-NY": 7.0,
    "US-FL": 7.0,
    "US-WA": 4.0,
    "US-CO": 3.0,
    "US-VA": 3.0,
    "US-IL": 4.0,
    "US-PA": 4.0,
    "US-OH": 3.0,
    "US-GA": 3.0,
    "US-NC": 3.0,
    "US-MI": 3.0,
    "US-NJ": 3.0,
    "US-MA": 2.0,
    "US-AZ": 2.0,
    "US-OR": 2.0,
    "US-MN": 2.0,
    "US-MD": 2.0,
    "US-TN": 2.0,
    "US-CT": 1.0,
    "US-UT": 1.0,
    "US-NV": 1.0,
    "US-MO": 1.0,
    "US-IN": 1.0,
    "US-WI": 1.0,
    "US-DC": 0.5,
    "US-MT": 0.4,
    "US-NH": 0.4,
    "US-NE": 0.4,
    "US-DE": 0.4,
}
_EEA = {
    "DE": 5.0,
    "FR": 4.0,
    "IT": 3.0,
    "ES": 3.0,
    "NL": 2.0,
    "PL": 2.0,
    "SE": 1.0,
    "IE": 1.0,
    "AT": 1.0,
    "BE": 1.0,
    "PT": 0.8,
    "DK": 0.5,
    "FI": 0.5,
    "CZ": 0.5,
    "GR": 0.4,
    "RO": 0.4,
    "HU": 0.3,
    "NO": 0.5,
    "IS": 0.1,
    "LU": 0.1,
    "LI": 0.05,
}
_CANADA = {"CA": 2.0, "CA-ON": 1.6, "CA-QC": 1.0, "CA-BC": 0.4}
_OTHER = {"JP": 1.0, "AU": 0.8, "MX": 0.6, "ZA": 0.3, "SG": 0.3}
# Share of all members per group (the remaining 5% have no region at all).
_GROUP_SHARE: dict[str, tuple[float, dict[str, float]]] = {
    "us": (40.0, _US),
    "eea": (25.0, _EEA),
    "gb": (6.0, {"GB": 1.0}),
    "ch": (2.0, {"CH": 1.0}),
    "ca": (5.0, _CANADA),
    "br": (6.0, {"BR": 1.0}),
    "in": (8.0, {"IN": 1.0}),
    "other": (3.0, _OTHER),
}
# Where movers go, by the group they leave.
_MOVES: dict[str, dict[str, float]] = {
    "us": {"GB": 3.0, "DE": 2.0, "CA-ON": 2.0, "US-NY": 2.0, "US-TX": 2.0, "CH": 1.0},
    "eea": {"US-NY": 3.0, "US-CA": 2.0, "GB": 2.0, "CH": 1.0, "DE": 1.0, "FR": 1.0},
    "gb": {"CH": 3.0, "US-NY": 2.0, "IE": 1.0, "AU": 1.0},
    "ch": {"DE": 2.0, "GB": 1.0, "US-NY": 1.0},
    "ca": {"US-WA": 2.0, "US-NY": 1.0, "GB": 1.0},
    "br": {"US-FL": 4.0, "PT": 2.0, "US-NY": 1.0},
    "in": {"US-CA": 2.0, "GB": 2.0, "US-TX": 1.0, "SG": 1.0},
    "other": {"US-CA": 1.0, "GB": 1.0, "AU": 1.0},
}
_OPT_OUT_GROUPS = frozenset({"us", "br"})

_SOURCES_CHOICE = ("privacy_page", "privacy_page", "privacy_page", "settings_api", "settings_api")
_IP_PREFIXES = ("192.0.2.", "198.51.100.", "203.0.113.")  # RFC 5737 documentation ranges
_USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Mobile Safari/537.36",
    "consentgate-demo-app/3.2 (Android 14)",
)

# Kinds of stored rows; rows are rendered into dicts only when yielded.
_PROFILE, _CONSENT, _SIGNAL, _ERASURE = range(4)
# (kind, subject, six kind-specific strings). Profile: region, birth_date. Consent: purpose,
# choice, source, notice_version, ip, user_agent. Empty string = field absent.
_Row = tuple[int, str, str, str, str, str, str, str]
# Rows are ordered through one int per row, (at << _SEQ_BITS) | index of the row: sorting
# plain ints is several times faster than sorting tuples, and the index breaks ties.
_SEQ_BITS = 32
_SEQ_MASK = (1 << _SEQ_BITS) - 1


class _Weighted:
    """Weighted choice among fixed codes, driven by one uniform draw in [0, 1)."""

    __slots__ = ("_codes", "_cumulative", "_total")

    def __init__(self, weights: dict[str, float]) -> None:
        self._codes: tuple[str, ...] = tuple(weights)
        self._cumulative: list[float] = list(accumulate(weights.values()))
        self._total: float = self._cumulative[-1]

    def pick(self, u: float) -> str:
        index = bisect_right(self._cumulative, u * self._total)
        return self._codes[min(index, len(self._codes) - 1)]


def _build_region_table() -> tuple[_Weighted, dict[str, str]]:
    weights: dict[str, float] = {}
    group_of: dict[str, str] = {}
    for group, (share, codes) in _GROUP_SHARE.items():
        total = sum(codes.values())
        for code, weight in codes.items():
            weights[code] = share * weight / total
            group_of[code] = group
    return _Weighted(weights), group_of


_REGIONS, _GROUP_OF = _build_region_table()
_MOVE_TABLES = {group: _Weighted(dest) for group, dest in _MOVES.items()}


class _Timestamps:
    """Formats epoch seconds as ``YYYY-MM-DDTHH:MM:SSZ`` from cached pieces."""

    __slots__ = ("_days", "_minutes", "_seconds")

    def __init__(self) -> None:
        self._days: dict[int, str] = {}
        self._minutes = [f"{m // 60:02d}:{m % 60:02d}:" for m in range(1440)]
        self._seconds = [f"{s:02d}Z" for s in range(60)]

    def __call__(self, at: int) -> str:
        day, second = divmod(at, _DAY)
        prefix = self._days.get(day)
        if prefix is None:
            prefix = time.strftime("%Y-%m-%dT", time.gmtime(day * _DAY))
            self._days[day] = prefix
        minute, sec = divmod(second, 60)
        return prefix + self._minutes[minute] + self._seconds[sec]


def _notice_at(at: int) -> str:
    return NOTICE_RECONSENT if at >= _RECONSENT_AT else NOTICE_DISCLOSURE


class _Member:
    """Draws one member's history; rows go to the shared list in a fixed order."""

    __slots__ = ("_keys", "_rng", "_rows", "limit", "subject")

    def __init__(self, rng: Random, rows: list[_Row], keys: list[int], subject: str) -> None:
        self._rng = rng
        self._rows = rows
        self._keys = keys
        self.subject = subject
        self.limit = _END  # nothing of this member happens at or after `limit`

    def between(self, low: int, high: int) -> int | None:
        """A uniform instant in [low, min(high, limit)), or None when that span is empty."""
        high = min(high, self.limit)
        if low >= high:
            return None
        return low + int(self._rng.random() * (high - low))

    def add(
        self,
        at: int,
        kind: int,
        f1: str = "",
        f2: str = "",
        f3: str = "",
        f4: str = "",
        f5: str = "",
        f6: str = "",
    ) -> None:
        rows = self._rows
        self._keys.append((at << _SEQ_BITS) | len(rows))
        rows.append((kind, self.subject, f1, f2, f3, f4, f5, f6))

    def consent(self, at: int, purpose: str, choice: str, source: str) -> None:
        rng = self._rng
        ip = user_agent = ""
        if rng.random() < _P_EVIDENCE:
            ip = _IP_PREFIXES[int(rng.random() * 3)] + str(1 + int(rng.random() * 254))
            user_agent = _USER_AGENTS[int(rng.random() * len(_USER_AGENTS))]
        self.add(at, _CONSENT, purpose, choice, source, _notice_at(at), ip, user_agent)

    def source(self) -> str:
        return _SOURCES_CHOICE[int(self._rng.random() * len(_SOURCES_CHOICE))]

    def first_choice(self, join: int) -> tuple[int, str] | None:
        """When and through what the member first makes an ai_training choice."""
        rng = self._rng
        if join >= _DISCLOSURE_AT and rng.random() < _P_SIGNUP_CHOICE:
            at = join + 30 + int(rng.random() * 870)
            return (at, "signup") if at < self.limit else None
        low = max(join + 300, _DISCLOSURE_AT + 3600)
        if low < _DISCLOSURE_AT + _CAMPAIGN and rng.random() < _P_CAMPAIGN:
            clicked = self.between(low, _DISCLOSURE_AT + _CAMPAIGN)
            return None if clicked is None else (clicked, "email_link")
        chosen = self.between(low, _END)
        return None if chosen is None else (chosen, self.source())


def _birth_and_join(rng: Random) -> tuple[int, int]:
    """(birth date ordinal, join time in epoch seconds)."""
    if rng.random() < _P_MINOR:
        birth = _MINOR_BIRTH_FIRST + int(rng.random() * (_MINOR_BIRTH_LAST - _MINOR_BIRTH_FIRST))
        earliest = max(_JOIN_START, (birth + _DAYS_13_YEARS - _EPOCH_ORDINAL) * _DAY)
        return birth, earliest + int(rng.random() * (_JOIN_END - earliest))
    join = _JOIN_START + int(rng.random() * (_JOIN_END - _JOIN_START))
    u = rng.random()
    first, span, _weight = _ADULT_AGES_OLDEST
    for bracket in _ADULT_AGES:
        if u < bracket[2]:
            first, span, _weight = bracket
            break
        u -= bracket[2]
    age_days = _DAYS_18_YEARS + int(((first - 18) + rng.random() * span) * _DAYS_PER_YEAR)
    return _EPOCH_ORDINAL + join // _DAY - age_days, join


def _opt_out_choices(m: _Member, rng: Random, join: int) -> None:
    """US and BR: used by default after the notice period, unless the member objects."""
    u = rng.random()
    if u < _P_OPTOUT_WITHDRAW:
        first = m.first_choice(join)
        if first is None:
            return
        at, source = first
        m.consent(at, AI_TRAINING, "withdrawn", source)
        if rng.random() < _P_OPTOUT_REGRANT:
            again = m.between(at + _DAY, _END)
            if again is not None:
                m.consent(again, AI_TRAINING, "granted", m.source())
    elif u < _P_OPTOUT_WITHDRAW + _P_OPTOUT_GRANT:
        first = m.first_choice(join)
        if first is not None:
            m.consent(first[0], AI_TRAINING, "granted", first[1])


def _opt_in_choices(m: _Member, rng: Random, join: int) -> None:
    """Everyone else: nothing may be used without a valid grant."""
    u = rng.random()
    if u < _P_OPTIN_GRANT:
        first = m.first_choice(join)
        if first is None:
            return
        last_grant, source = first
        m.consent(last_grant, AI_TRAINING, "granted", source)
        if last_grant < _RECONSENT_AT and rng.random() < _P_RECONSENT:
            low = max(last_grant + 3600, _RECONSENT_AT + 3600)
            if rng.random() < 0.6:  # most re-consent from the e-mail about the material change
                again, source = m.between(low, _RECONSENT_AT + 45 * _DAY), "email_link"
            else:
                again, source = m.between(low, _END), m.source()
            if again is not None:
                m.consent(again, AI_TRAINING, "granted", source)
                last_grant = again
        if rng.random() < _P_WITHDRAW_AFTER_GRANT:
            withdrawn = m.between(last_grant + 3600, _END)
            if withdrawn is not None:
                m.consent(withdrawn, AI_TRAINING, "withdrawn", m.source())
    elif u < _P_OPTIN_GRANT + _P_OPTIN_REFUSE:
        first = m.first_choice(join)
        if first is None:
            return
        at, source = first
        m.consent(at, AI_TRAINING, "refused", source)
        if rng.random() < _P_GRANT_AFTER_REFUSAL:
            later = m.between(at + _DAY, _END)
            if later is not None:
                m.consent(later, AI_TRAINING, "granted", m.source())


def _genai_choices(m: _Member, rng: Random, join: int) -> None:
    at = m.between(max(join + 300, _DISCLOSURE_AT + 3600), _END)
    if at is None:
        return
    u = rng.random()
    choice = "granted" if u < 0.65 else "withdrawn" if u < 0.85 else "refused"
    m.consent(at, GENAI_FEATURES, choice, m.source())
    if choice == "granted" and rng.random() < 0.15:
        later = m.between(at + _DAY, _END)
        if later is not None:
            m.consent(later, GENAI_FEATURES, "withdrawn", m.source())


def _member(rng: Random, rows: list[_Row], keys: list[int], subject: str) -> None:
    m = _Member(rng, rows, keys, subject)
    birth, join = _birth_and_join(rng)
    birth_date = date.fromordinal(birth).isoformat()
    if rng.random() < _P_UNKNOWN_REGION:
        region, group = "", "unknown"
    else:
        region = _REGIONS.pick(rng.random())
        group = _GROUP_OF[region]
    m.add(join, _PROFILE, region, birth_date)

    if rng.random() < _P_ERASURE:
        erased = m.between(max(_ERASURE_START, join + _DAY), _END)
        if erased is not None:
            m.add(erased, _ERASURE)
            m.limit = erased

    if region and rng.random() < _P_MOVER:
        moved = m.between(join + 30 * _DAY, _END)
        destination = _MOVE_TABLES[group].pick(rng.random())
        if destination == region:
            destination = "GB" if group in _OPT_OUT_GROUPS else "US-NY"
        if moved is not None:
            m.add(moved, _PROFILE, destination)

    if rng.random() < _P_GPC[group]:
        signalled = m.between(max(join + 60, _GPC_START), _END)
        if signalled is not None:
            m.add(signalled, _SIGNAL)

    if group in _OPT_OUT_GROUPS:
        _opt_out_choices(m, rng, join)
    else:
        _opt_in_choices(m, rng, join)

    if rng.random() < _P_GENAI:
        _genai_choices(m, rng, join)


def _render(when: str, row: _Row) -> dict[str, str]:
    kind, subject, f1, f2, f3, f4, f5, f6 = row
    if kind == _CONSENT:
        event = {
            "type": "consent",
            "subject": subject,
            "purpose": f1,
            "choice": f2,
            "at": when,
            "source": f3,
            "notice_version": f4,
        }
        if f5:
            event["ip"] = f5
            event["user_agent"] = f6
        return event
    if kind == _PROFILE:
        event = {"type": "profile", "subject": subject, "at": when}
        if f1:
            event["region"] = f1
        if f2:
            event["birth_date"] = f2
        return event
    if kind == _SIGNAL:
        return {"type": "signal", "subject": subject, "signal": "gpc", "at": when}
    return {"type": "erasure", "subject": subject, "at": when}


def _draw(n_members: int, seed: int) -> tuple[list[_Row], list[int]]:
    """All rows in generation order, and their sort keys in time order."""
    if n_members < 0:
        raise ValueError(f"n_members must be >= 0, got {n_members}")
    rng = Random(seed)
    rows: list[_Row] = []
    keys: list[int] = []
    width = max(6, len(str(n_members)))
    for number in range(1, n_members + 1):
        _member(rng, rows, keys, f"m{number:0{width}d}")
    if len(rows) > _SEQ_MASK:
        raise ValueError(f"too many events for one population: {len(rows)}")
    keys.sort()
    return rows, keys


def generate_population(n_members: int, *, seed: int = 7) -> Iterator[dict[str, str]]:
    """Yield the events of `n_members` synthetic members, sorted by ``at``.

    Subjects are ``m000001``, ``m000002``, ...; the same `n_members` and `seed` always
    give the same events in the same order. The timeline runs from 2019-01-01 (first
    joins) to 2025-09-30; consent choices follow the notices :data:`NOTICE_DISCLOSURE`
    and :data:`NOTICE_RECONSENT`.

    Raises:
        ValueError: `n_members` is negative.
    """
    rows, keys = _draw(n_members, seed)
    return _iter_events(rows, keys)


def _iter_events(rows: Sequence[_Row], keys: Sequence[int]) -> Iterator[dict[str, str]]:
    stamp = _Timestamps()
    for key in keys:
        yield _render(stamp(key >> _SEQ_BITS), rows[key & _SEQ_MASK])


def write_events_jsonl(path: Path, n_members: int, *, seed: int = 7) -> int:
    """Write :func:`generate_population` to `path` as JSON Lines; return the event count."""
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    count = 0
    batch: list[str] = []
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for event in generate_population(n_members, seed=seed):
            batch.append(dumps(event))
            count += 1
            if len(batch) >= 10_000:
                batch.append("")
                out.write("\n".join(batch))
                batch.clear()
        if batch:
            batch.append("")
            out.write("\n".join(batch))
    return count


def write_posts_parquet(directory: Path, n_members: int, n_posts: int, *, seed: int = 7) -> int:
    """Write `n_posts` synthetic member posts about the members of
    `generate_population(n_members)` as Parquet files under `directory`.

    Columns: `post_id`, `subject_id`, `collected_at` (with timezone), `source`
    (posts, comments, private messages, support chats), `sensitive`, `text`.
    Times run from 2019 to September 2025, so many posts predate the notice that
    disclosed AI training; about 1% of posts name no member or a stranger, 0.2%
    have no time, 3% are flagged sensitive. Generated by DuckDB, in seconds.
    """
    import duckdb

    directory.mkdir(parents=True, exist_ok=True)
    width = max(6, len(str(n_members)))
    start, end = _epoch(2019, 1, 1), _epoch(2025, 9, 30)
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        con.execute(f"""
COPY (
  SELECT 'post-' || i AS post_id,
    CASE WHEN hash(i, {seed}, 1) % 200 = 0 THEN NULL
         WHEN hash(i, {seed}, 1) % 200 = 1 THEN 'visitor' || (hash(i, {seed}, 2) % 5000)
         ELSE 'm' || lpad(CAST(1 + hash(i, {seed}, 3) % {n_members} AS VARCHAR), {width}, '0')
    END AS subject_id,
    CASE WHEN hash(i, {seed}, 4) % 500 = 0 THEN NULL ELSE
      make_timestamptz(CAST(({start} + hash(i, {seed}, 5) % {end - start}) * 1000000 AS BIGINT))
    END AS collected_at,
    ['post', 'post', 'post', 'comment', 'comment', 'private_message', 'support_chat']
      [CAST(1 + hash(i, {seed}, 6) % 7 AS BIGINT)] AS source,
    hash(i, {seed}, 7) % 100 < 3 AS sensitive,
    ['Trying the new trail this weekend', 'Our team shipped the release', 'Thanks for the help',
     'Photo from the conference', 'Looking for advice on hiring']
      [CAST(1 + hash(i, {seed}, 8) % 5 AS BIGINT)] || ' #' || (hash(i, {seed}, 9) % 1000) AS text
  FROM range({n_posts}) t(i)
) TO '{str(directory).replace("'", "''")}' (FORMAT parquet, PER_THREAD_OUTPUT true, OVERWRITE true)
""")
    finally:
        con.close()
    return n_posts
