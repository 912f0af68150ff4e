"""The training-data gate: consent-clean datasets with audit manifests (DESIGN §5).

`gate()` applies the decision rule of DESIGN §3 to every record of a dataset with
DuckDB, writes the kept records, the exclusions with their reasons, the
contributors and a manifest; `replay()` re-evaluates a past run.
"""

from consentgate.gate.manifest import check_manifest, load_manifest
from consentgate.gate.options import Columns, GateOptions
from consentgate.gate.run import GateResult, gate

__all__ = ["Columns", "GateOptions", "GateResult", "check_manifest", "gate", "load_manifest"]
