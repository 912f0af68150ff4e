"""Lines of JSON to ledger rows: the CPU-bound half of an import.

Runs in worker processes for large files, so it imports only the domain and orjson,
and reports a bad line as a picklable `LineError` value instead of raising.

The compiled `_lineparse` (optional) builds the rows of plain lines (docs/formats.md
§"How imports run") and hands every other line back to `validate_event`, which
alone decides and names what is wrong. `CONSENTGATE_PYTHON_IMPORT=1` turns it off.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection
from datetime import UTC, datetime
from types import ModuleType
from typing import Any, NamedTuple

import orjson

from consentgate.domain.errors import EventError, InputError, UnknownPurposeError
from consentgate.domain.events import ValidEvent, validate_event
from consentgate.domain.regions import member_regions
from consentgate.domain.timeutil import to_micros
from consentgate.ledger.chain import NO_NATIVE_ENV, entry_parts
from consentgate.ledger.rows import id_key
from consentgate.ledger.sealing import PERSONAL, pseudonym

__all__ = ["ChunkResult", "LineError", "Row", "canonical", "parse_lines", "row_of", "set_context"]

Row = tuple[Any, ...]


class LineError(NamedTuple):
    """The first bad line of a chunk."""

    lineno: int
    field: str
    expected: str
    found: object
    unknown_purpose: bool = False

    def error(self, name: str) -> InputError:
        """The exception to raise, located at `name:lineno`."""
        cls = UnknownPurposeError if self.unknown_purpose else EventError
        return cls(self.field, self.expected, self.found).located(f"{name}:{self.lineno}")


ChunkResult = tuple[list[int], list[Row]] | LineError


_purposes: frozenset[str] = frozenset()
_secret = b""


def _native() -> ModuleType | None:
    if os.environ.get(NO_NATIVE_ENV) == "1":
        return None
    try:
        from consentgate.ledger import _lineparse
    except ImportError:
        return None
    return _lineparse


def set_context(purposes: Collection[str], secret: bytes) -> None:
    """Set the purposes consent events may name and the ledger's pseudonym key
    (a worker-process initializer)."""
    global _purposes, _secret
    _purposes = frozenset(purposes)
    _secret = secret


def canonical(body: dict[str, str]) -> bytes:
    """The canonical bytes of a validated body (docs/formats.md), by orjson: sorted
    keys, no spaces, UTF-8 kept; the same bytes as the domain's own encoder for every
    body validation lets through (printable strings need only quote and backslash
    escapes, which both write alike), as tests/ledger/test_parsing.py checks."""
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def row_of(valid: ValidEvent, secret: bytes, recorded_us: int = 0) -> Row:
    """The parsed row of a validated event (`rows.PARSED` order): what the writer
    needs to seal, chain and store it."""
    body = valid.body
    personal = {name: body[name] for name in PERSONAL if name in body}
    subject = body["subject"]
    key = id_key(valid.event_id)
    ps = pseudonym(secret, subject)
    at_us = to_micros(valid.at)
    get = body.get
    purpose, choice, signal = get("purpose"), get("choice"), get("signal")
    source, notice = get("source"), get("notice_version")
    head, tail = entry_parts(
        secret, key, valid.event_id, valid.digest, valid.type, ps, at_us, purpose, choice,
        signal, source, notice, recorded_us,
    )  # fmt: skip
    return (
        key,
        valid.event_id,
        valid.digest,
        valid.type,
        subject,
        ps,
        at_us,
        purpose,
        choice,
        signal,
        source,
        notice,
        get("region"),
        get("birth_date"),
        orjson.dumps(personal, option=orjson.OPT_SORT_KEYS) if personal else None,
        recorded_us,
        head,
        tail,
    )


def parse_lines(task: tuple[int, bytes]) -> ChunkResult:
    """Validate a block of lines starting at line number `task[0]`; skip blank lines."""
    first, block = task
    now = time.time_ns() // 1_000
    native = _native()
    if native is None:
        linenos: list[int] = []
        rows: list[Row] = []
        for offset, raw in enumerate(block.split(b"\n")):
            if raw.strip():
                if isinstance(row := _parse_line(raw, first + offset, now), LineError):
                    return row
                linenos.append(first + offset)
                rows.append(row)
        return linenos, rows
    today = datetime.now(UTC).date()
    day = today.year * 10_000 + today.month * 100 + today.day
    linenos, items, back = native.parse_block(
        block, first, _secret, _purposes, member_regions(), now, day
    )
    for i in back:
        if isinstance(row := _parse_line(items[i], linenos[i], now), LineError):
            return row
        items[i] = row
    return linenos, items


def _parse_line(raw: bytes, lineno: int, now: int) -> Row | LineError:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        return LineError(lineno, "(line)", "one JSON object per line", str(err))
    try:
        return row_of(validate_event(obj, purposes=_purposes, encode=canonical), _secret, now)
    except InputError as err:
        unknown = isinstance(err, UnknownPurposeError)
        return LineError(lineno, err.field, err.expected, _plain(err.found), unknown)


def _plain(value: object) -> object:
    """A value that pickles and prints (JSON values already do)."""
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
