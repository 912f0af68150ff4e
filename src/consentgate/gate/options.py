"""What a gate run is asked to do: purpose, evaluation time, column names, flags.

The options are recorded in the manifest (`GateOptions.as_manifest`) and read back
from it by `--replay`, so a past run can be re-evaluated exactly as it was asked.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any

from consentgate.domain.errors import InputError
from consentgate.domain.timeutil import parse_ts

__all__ = ["Columns", "GateOptions"]


@dataclass(frozen=True, slots=True)
class Columns:
    """Names of the dataset columns the gate reads (DESIGN §5); others pass through."""

    subject: str = "subject_id"
    time: str = "collected_at"
    id: str | None = None
    source: str = "source"
    sensitive: str = "sensitive"


@dataclass(frozen=True, slots=True)
class GateOptions:
    """One gate run's request. `source`: the source of every record (overrides the
    column); `naive_timestamps="utc"` accepts times without a zone as UTC."""

    purpose: str
    as_of: datetime
    columns: Columns = Columns()
    source: str | None = None
    naive_timestamps: str | None = None

    def __post_init__(self) -> None:
        if self.as_of.tzinfo is None or self.as_of.utcoffset() is None:
            raise InputError("as_of", "a time with a timezone", self.as_of.isoformat())
        if self.naive_timestamps not in (None, "utc"):
            raise InputError("naive_timestamps", "'utc' or nothing", self.naive_timestamps)
        for name in ("subject", "time", "source", "sensitive"):
            if not getattr(self.columns, name):
                raise InputError(f"{name}_col", "a column name", getattr(self.columns, name))

    def as_manifest(self) -> dict[str, Any]:
        """The options as the manifest records them (purpose and as_of apart)."""
        return {
            "columns": asdict(self.columns),
            "source": self.source,
            "naive_timestamps": self.naive_timestamps,
        }

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> GateOptions:
        """The options a manifest records."""
        try:
            opts = manifest["options"]
            known = {f.name for f in fields(Columns)}
            columns = Columns(**{k: v for k, v in opts["columns"].items() if k in known})
            return cls(
                purpose=manifest["purpose"],
                as_of=parse_ts(manifest["as_of"], field="as_of"),
                columns=columns,
                source=opts.get("source"),
                naive_timestamps=opts.get("naive_timestamps"),
            )
        except (KeyError, TypeError, AttributeError) as err:
            raise InputError("manifest", "a gate manifest (DESIGN §5)", f"missing {err}") from None
