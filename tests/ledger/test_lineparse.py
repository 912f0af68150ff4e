"""The compiled line parser (`consentgate.ledger._lineparse`) builds what Python builds.

It is an optional speed-up of imports: for a plain line it builds the row
`row_of(validate_event(...))` would build; every other line it hands back, and Python
decides it. So:

- its tables (keys allowed per type, free-text keys, choices, signals, sealed keys,
  the text limit) are the domain's;
- a row it builds is byte for byte the Python row, and it builds rows only for lines
  Python accepts (never a row for a bad line, whatever the mutation);
- it takes the plain lines of a typical import (so the comparisons compare something);
- `parse_lines` gives the same rows, or the same first error, with and without it.

With CI=true the module must have been built (`.ci/run` installs the headers it needs).
"""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, timedelta

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consentgate.domain import events as domain_events
from consentgate.domain.errors import InputError
from consentgate.domain.regions import member_regions
from consentgate.ledger import chain, parsing
from consentgate.ledger.parsing import canonical, parse_lines, row_of, set_context
from consentgate.ledger.sealing import PERSONAL

from ..conftest import compiled_module

native = compiled_module("consentgate.ledger._lineparse", "the compiled line parser")

SECRET = bytes(range(32))
PURPOSES = frozenset({"ai_training", "analytics"})
NOW = 1_764_000_000_123_456
TODAY = datetime.now(UTC).date()
TODAY_INT = TODAY.year * 10_000 + TODAY.month * 100 + TODAY.day


def python_row(line: bytes) -> tuple[object, ...] | None:
    """What the Python parser makes of a line: its row, or None if it refuses it."""
    try:
        obj = orjson.loads(line)
        valid = domain_events.validate_event(obj, purposes=PURPOSES, encode=canonical)
    except (orjson.JSONDecodeError, InputError):
        return None
    return row_of(valid, SECRET, NOW)


def compiled(line: bytes) -> tuple[object, ...] | None:
    """The compiled parser's row of a one-line block, or None if it hands it back."""
    linenos, items, back = native.parse_block(
        line, 1, SECRET, PURPOSES, member_regions(), NOW, TODAY_INT
    )
    if not linenos:
        return None
    assert linenos == [1]
    if back:
        assert back == [0]
        assert items == [line.strip(b"\n")]
        return None
    row: tuple[object, ...] = items[0]
    return row


def check(line: bytes) -> bool:
    """The compiled row, if any, is the Python row; True if it built one."""
    row = compiled(line)
    if row is not None:
        assert row == python_row(line), line
    return row is not None


def test_tables_are_the_domains() -> None:
    table = native.contract()
    assert table["types"] == {
        kind: (domain_events._ALLOWED[kind], domain_events._TEXT_FIELDS[kind])
        for kind in domain_events.EVENT_TYPES
    }
    assert table["choices"] == domain_events.CHOICES
    assert table["signals"] == domain_events.SIGNALS
    assert table["personal"] == frozenset(PERSONAL)
    assert table["max_text"] == domain_events.MAX_TEXT


def test_imports_use_the_compiled_parser_where_it_was_built() -> None:
    assert parsing._native() is native


# -- generated lines ------------------------------------------------------------------

PLAIN = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=20)
TRICKY = st.sampled_from(
    ["", " ", "   ", "a" * 256, "a" * 257, "é", "a\\b", 'q"q', "tab\there", "\x7f", "\u2028",
     "nul\x00", "x" * 300, "1", "GB", "US-CA", "EEA", "*", "XX", "US-ZZ", "ai_training",
     "research", "granted", "GRANTED", "gpc", "dnt"]
)  # fmt: skip
TEXT = PLAIN | TRICKY
VALUE = st.one_of(TEXT, st.none(), st.integers(-5, 5), st.booleans(), st.just([]), st.just({}))


# Naive bounds, as st.datetimes wants them; the text written is UTC (…Z).
DAYS = st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30))  # noqa: DTZ001
RECENT = st.datetimes(datetime(1990, 1, 1), datetime(2030, 1, 1))  # noqa: DTZ001


ODD_TIMES = [
    "2024-02-30T00:00:00Z", "2023-02-29T10:00:00Z", "2024-02-29T10:00:00Z",
    "2024-01-01T24:00:00Z", "2024-01-01T23:60:00Z", "2024-01-01T23:59:60Z",
    "0000-01-01T00:00:00Z", "2024-13-01T00:00:00Z", "2024-00-10T00:00:00Z",
    "+024-01-01T00:00:00Z", "2024-01-01T00:00:0aZ", "20240101T000000Z",
]  # fmt: skip
ODD_DATES = ["2024-W01-1", "2023-02-29", "2024-02-29", "1990-1-01", " 1990-01-01", "1990-01-01 "]


@st.composite
def timestamps(draw: st.DrawFn, base: datetime) -> object:
    plain = base.strftime("%Y-%m-%dT%H:%M:%S") + "Z"
    if len(plain) != 20:  # strftime does not pad years before 1000 everywhere
        plain = f"{base.year:04d}" + plain[plain.index("-") :]
    spellings = [plain, plain, plain, plain[:-1], plain[:-1] + "+00:00", plain[:-1] + ".5Z",
                 plain.replace("T", " "), plain.replace("T", "t"), plain[:-1] + "z"]  # fmt: skip
    return draw(st.sampled_from(spellings + ODD_TIMES))


@st.composite
def birth_dates(draw: st.DrawFn, at: datetime) -> object:
    day = draw(st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31)))
    plain = day.isoformat()
    near = (TODAY + timedelta(days=draw(st.integers(-2, 2)))).isoformat()
    shift = timedelta(days=draw(st.integers(-2, 2)))
    around = (at.date() + shift).isoformat() if date(1, 1, 3) < at.date() < TODAY else near
    return draw(st.sampled_from([plain, around, around, near, plain.replace("-", ""), *ODD_DATES]))


KEYS = (
    "type", "subject", "at", "event_id", "ip", "user_agent", "note", "region", "birth_date",
    "purpose", "choice", "source", "notice_version", "signal",
)  # fmt: skip


@st.composite
def objects(draw: st.DrawFn) -> dict[str, object]:
    kind = draw(st.sampled_from(["profile", "consent", "signal", "erasure", "other"]))
    base = draw(RECENT | DAYS)
    obj: dict[str, object] = {"type": kind, "subject": draw(TEXT), "at": draw(timestamps(base))}
    if kind == "profile":
        if draw(st.booleans()):
            obj["region"] = draw(st.sampled_from(["DE", "US-CA", "GB", "FR", "*", "EEA"]) | TEXT)
        if draw(st.booleans()):
            obj["birth_date"] = draw(birth_dates(base))
    elif kind == "consent":
        obj["purpose"] = draw(st.sampled_from(sorted(PURPOSES)) | TEXT)
        obj["choice"] = draw(st.sampled_from(["granted", "withdrawn", "refused"]) | VALUE)
        for name in draw(st.sets(st.sampled_from(["source", "notice_version"]))):
            obj[name] = draw(TEXT)
    elif kind == "signal":
        obj["signal"] = draw(st.just("gpc") | VALUE)
    for name in draw(st.sets(st.sampled_from(["ip", "user_agent", "note", "event_id"]))):
        obj[name] = draw(TEXT)
    if draw(st.integers(0, 9)) == 0:  # now and then: any key, any value
        obj[draw(st.sampled_from(KEYS) | st.just("extra"))] = draw(VALUE)
    if draw(st.integers(0, 9)) == 0:
        del obj[draw(st.sampled_from(sorted(obj)))]
    return obj


def render(obj: dict[str, object], style: int) -> bytes:
    """A line of JSON in one of several spellings (key order and spacing vary)."""
    items = list(obj.items())
    if style == 1:
        items.reverse()
    if style == 2:
        return json.dumps(dict(items), separators=(", ", " : ")).encode() + b"\r"
    if style == 3:
        return b" \t" + json.dumps(dict(items), ensure_ascii=False).encode() + b" "
    return json.dumps(dict(items), separators=(",", ":")).encode()


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(objects(), st.integers(0, 3))
def test_a_compiled_row_is_the_python_row(obj: dict[str, object], style: int) -> None:
    check(render(obj, style))


@settings(max_examples=3000, deadline=None)
@given(objects(), st.integers(0, 3), st.data())
def test_no_mutation_makes_a_bad_line_pass(
    obj: dict[str, object], style: int, data: st.DataObject
) -> None:
    line = bytearray(render(obj, style))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(line)))
        op = data.draw(st.integers(0, 2))
        byte = data.draw(st.integers(0, 255) | st.sampled_from(list(b'",:{}\\ \t0Z-T')))
        if op == 0 and at < len(line):
            line[at] = byte
        elif op == 1:
            line.insert(at, byte)
        elif at < len(line):
            del line[at]
    check(bytes(line).replace(b"\n", b" "))


def typical_lines(n: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        at = datetime(2023, 1, 1, tzinfo=UTC) + timedelta(seconds=rnd.randrange(10**8))
        obj: dict[str, str] = {
            "type": rnd.choice(["profile", "consent", "signal", "erasure"]),
            "subject": f"m{rnd.randrange(10**6):06d}",
            "at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if obj["type"] == "profile":
            obj["region"] = rnd.choice(["DE", "US-CA", "GB", "BR", "IN", "CH"])
            obj["birth_date"] = f"{rnd.randrange(1940, 2012)}-0{rnd.randrange(1, 10)}-1{i % 10}"
        elif obj["type"] == "consent":
            obj |= {"purpose": "ai_training", "choice": rnd.choice(domain_events.CHOICES)}
            obj |= {"source": "settings", "notice_version": "2024-06-26"}
        elif obj["type"] == "signal":
            obj["signal"] = "gpc"
        if rnd.random() < 0.5:
            obj["event_id"] = f"e{i}"
        if rnd.random() < 0.3:
            obj |= {"ip": "203.0.113.9", "user_agent": "Mozilla/5.0 (X11)", "note": "web"}
        out.append(orjson.dumps(obj))
    return out


def test_it_takes_the_plain_lines_of_a_typical_import() -> None:
    lines = typical_lines(3000, seed=7)
    assert all(check(line) for line in lines)


# -- whole blocks through parse_lines ---------------------------------------------------


def both_ways(block: bytes, monkeypatch: pytest.MonkeyPatch) -> tuple[object, object]:
    set_context(PURPOSES, SECRET)
    fast = parse_lines((5, block))
    monkeypatch.setenv(chain.NO_NATIVE_ENV, "1")
    slow = parse_lines((5, block))
    monkeypatch.delenv(chain.NO_NATIVE_ENV)
    return fast, slow


def without_recorded(result: object) -> object:
    """A result with the recording time left out (each call reads the clock)."""
    if not isinstance(result, tuple) or isinstance(result, parsing.LineError):
        return result
    linenos, rows = result
    return linenos, [(*r[:15], r[16].split(b',"recorded_us"')[0], r[17]) for r in rows]


def test_blocks_parse_alike_with_blank_lines_and_hand_backs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines = typical_lines(400, seed=3)
    lines[10] = b""
    lines[11] = b"  \t\r\x0b\x0c"
    lines[50] = orjson.dumps(
        {"type": "erasure", "subject": "\u00e9l\u00e8ve", "at": "2024-01-01T00:00:00+02:00"}
    )
    lines[51] = b'{"type":"signal","subject":"a\\"b","at":"2024-01-01T00:00:00Z","signal":"gpc"}'
    block = b"\n".join(lines) + b"\n\n"
    fast, slow = both_ways(block, monkeypatch)
    assert without_recorded(fast) == without_recorded(slow)
    assert isinstance(fast, tuple)
    assert len(fast[1]) == 398
    assert fast[0][10] == 5 + 12  # blank lines skipped, numbering kept


@pytest.mark.parametrize(
    "bad",
    [
        b'{"type":"consent","subject":"m1","at":"2024-01-01T00:00:00Z","purpose":"nope","choice":"granted"}',
        b'{"type":"profile","subject":"m1","at":"2024-01-01T00:00:00Z","region":"XX"}',
        b'{"type":"profile","subject":"m1","at":"2024-01-01T00:00:00Z","birth_date":"2999-01-01"}',
        b'{"type":"erasure","subject":"m1","at":"2024-01-01T00:00:00"}',
        b'{"type":"erasure","subject":"   ","at":"2024-01-01T00:00:00Z"}',
        b'{"type":"erasure","subject":"m1","at":"2024-01-01T00:00:00Z","region":"DE"}',
        b'{"type":"erasure","subject":"m1","at":"2024-01-01T00:00:00Z"',
    ],
)
def test_the_first_bad_line_is_named_alike(bad: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = typical_lines(50, seed=5)
    lines[30] = bad
    fast, slow = both_ways(b"\n".join(lines), monkeypatch)
    assert isinstance(fast, parsing.LineError)
    assert fast == slow
    assert fast.lineno == 5 + 30


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"erasure","subject":"a","subject":"b","at":"2024-01-01T00:00:00Z"}',
        b'{"type":"erasure","sub\\u006aect":"a","at":"2024-01-01T00:00:00Z"}',
        b'{"type":"erasure","subject":"a\\/b","at":"2024-01-01T00:00:00Z"}',
        b'{"type":"erasure","subject":"a","at":"2024-01-01T00:00:00.000Z"}',
        b'{"type":"erasure","subject":"a","at":"2024-01-01T00:00:00Z","note":null}',
        b'\xef\xbb\xbf{"type":"erasure","subject":"a","at":"2024-01-01T00:00:00Z"}',
    ],
)
def test_lines_it_is_not_sure_of_go_back_to_python(line: bytes) -> None:
    assert compiled(line) is None
