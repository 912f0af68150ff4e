"""The training-data gate: consent-clean datasets with audit manifests (DESIGN §5).

`consentgate.gate(...)` (this module is callable: it is `gate.run.gate`) applies
the decision rule of DESIGN §3 to every record of a dataset with DuckDB and writes
the kept records, the exclusions with their reasons, the contributors and a
manifest; `replay()` re-evaluates a past run; `check_manifest()` audits one.
"""

import sys
import types
from typing import Any

from consentgate.gate.manifest import check_manifest, load_manifest
from consentgate.gate.options import Columns, GateOptions
from consentgate.gate.replay import ReplayReport, replay
from consentgate.gate.run import GateResult, gate

__all__ = [
    "Columns",
    "GateOptions",
    "GateResult",
    "ReplayReport",
    "check_manifest",
    "gate",
    "load_manifest",
    "replay",
]


class _CallableModule(types.ModuleType):
    """`consentgate.gate(...)` runs the gate; the module's names stay reachable."""

    def __call__(self, *args: Any, **kwargs: Any) -> GateResult:
        return gate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
