"""The import's fast canonical encoder writes the domain's canonical bytes exactly."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from consentgate.domain.errors import EventError
from consentgate.domain.events import _encode, validate_event
from consentgate.ledger.chain import entry_bytes, entry_parts, splice
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


OPTIONAL = st.none() | TEXT


@settings(max_examples=500)
@given(
    st.integers(-(2**63), 2**63 - 1),
    TEXT,
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-(2**62), 2**62),
    OPTIONAL,
    OPTIONAL,
    OPTIONAL,
    st.none() | st.binary(max_size=64),
    st.integers(1, 2**40),
)
def test_the_writer_splices_the_same_entry_the_verifier_encodes(
    key: int,
    event_id: str,
    subject: int,
    at_us: int,
    purpose: str | None,
    source: str | None,
    notice: str | None,
    sealed: bytes | None,
    seq: int,
) -> None:
    """The parser prepares an entry's parts and the writer splices in `sealed` and
    `seq`; `verify` encodes whole entries. Every byte must agree, or sound ledgers
    would fail to verify."""
    secret, digest, recorded = b"k" * 32, "d" * 64, at_us + 5
    head, tail = entry_parts(
        secret, key, event_id, digest, "consent", subject, at_us, purpose, "granted", None,
        source, notice, recorded,
    )  # fmt: skip
    whole = entry_bytes(
        secret, seq, key, event_id, digest, "consent", subject, at_us, purpose, "granted", None,
        source, notice, sealed, recorded,
    )  # fmt: skip
    assert splice(head, sealed, seq, tail) == whole
    assert orjson.loads(whole)["seq"] == seq
