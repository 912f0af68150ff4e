"""Timestamps: always timezone-aware, normalised to UTC, with exact microsecond arithmetic."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from consentgate.domain.errors import InputError

__all__ = ["EPOCH", "age_on", "format_ts", "from_micros", "parse_date", "parse_ts", "to_micros"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_ts(value: object, *, field: str = "at") -> datetime:
    """Parse an ISO 8601 timestamp that carries a timezone; return it in UTC."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise InputError(field, "an ISO 8601 timestamp with timezone", value) from None
    else:
        raise InputError(field, "an ISO 8601 timestamp with timezone", value)
    tz = parsed.tzinfo
    if tz is UTC:
        return parsed
    if tz is None or parsed.utcoffset() is None:
        raise InputError(field, "a timestamp with a timezone (e.g. ...Z or +02:00)", value)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise InputError(field, "a timestamp between the years 1 and 9999 in UTC", value) from None


def parse_date(value: object, *, field: str) -> date:
    """Parse a calendar date `YYYY-MM-DD`."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and len(value) == 10:
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise InputError(field, "a date YYYY-MM-DD", value)


def format_ts(ts: datetime) -> str:
    """Canonical text of an instant: UTC, microseconds only when non-zero, `Z` suffix."""
    utc = ts.astimezone(UTC)
    spec = "seconds" if utc.microsecond == 0 else "microseconds"
    return utc.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def to_micros(ts: datetime) -> int:
    """Whole microseconds since 1970-01-01T00:00:00Z (exact, no float rounding)."""
    delta = ts - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(us: int) -> datetime:
    """Inverse of `to_micros`."""
    return EPOCH + timedelta(microseconds=us)


def age_on(birth: date, instant: datetime) -> int:
    """Whole years completed on the UTC calendar date of `instant`."""
    day = instant.astimezone(UTC).date()
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))
