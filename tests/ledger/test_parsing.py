"""The import's fast canonical encoder writes the domain's canonical bytes exactly."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from consentgate.domain.errors import EventError
from consentgate.domain.events import _encode, validate_event
from consentgate.ledger.parsing import LineError, canonical, parse_lines, set_context

# Any text, including quotes, backslashes, non-ASCII, astral characters and the
# characters JSON must escape; validation decides what gets through.
TEXT = st.text(min_size=1, max_size=40)
TYPES = st.sampled_from(["profile", "consent", "signal", "erasure"])


@st.composite
def raw_events(draw: st.DrawFn) -> dict[str, object]:
    kind = draw(TYPES)
    obj: dict[str, object] = {"type": kind, "subject": draw(TEXT), "at": "2024-05-06T07:08:09Z"}
    if kind == "profile":
        obj["region"] = draw(st.sampled_from(["DE", "US-CA", "BR"]))
    elif kind == "consent":
        obj |= {"purpose": "ai_training", "choice": "granted", "source": draw(TEXT)}
        obj["notice_version"] = draw(TEXT)
    elif kind == "signal":
        obj["signal"] = "gpc"
    for name in draw(st.sets(st.sampled_from(["ip", "user_agent", "note", "event_id"]))):
        obj[name] = draw(TEXT)
    return obj


@settings(max_examples=2000)
@given(raw_events())
def test_fast_encoder_equals_the_canonical_encoder(obj: dict[str, object]) -> None:
    try:
        valid = validate_event(obj)
    except EventError:
        return  # rejected text never reaches the encoder
    assert canonical(valid.body) == _encode(valid.body)
    assert validate_event(obj, encode=canonical) == valid


def test_escapes_are_the_same() -> None:
    body = {"type": "erasure", "subject": 'a"b\\c/é€😀', "at": "2024-05-06T07:08:09Z"}
    assert canonical(body) == _encode(body)
    assert b'a\\"b\\\\c/' in canonical(body)


def test_parse_lines_digests_match_the_domain() -> None:
    set_context(frozenset({"ai_training"}), b"secret")
    lines = [
        b'{"type":"erasure","subject":"m\\u00e9\\"x","at":"2024-01-01T00:00:00+02:00"}',
        b"",
        b'{"type":"consent","subject":"m2","at":"2024-01-01T00:00:00Z",'
        b'"purpose":"ai_training","choice":"refused","note":"\\\\ \xe2\x82\xac"}',
    ]
    result = parse_lines((10, b"\n".join(lines)))
    assert not isinstance(result, LineError)
    linenos, rows = result
    assert linenos == [10, 12]
    for raw, row in zip([lines[0], lines[2]], rows, strict=True):
        expected = validate_event(orjson.loads(raw))
        assert row[2] == expected.digest
        assert row[4] == expected.body["subject"]
        assert row[1] == expected.event_id
