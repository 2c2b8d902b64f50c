"""Where the project writes things, and the digests that name cached work.

Everything generated goes below :data:`BUILD` (``build/`` in the directory the command runs from,
or ``$ATTNFORGE_ROOT/build``): ``build/sim/`` (Verilator models, one per unit and parameter
set), ``build/synth/`` (Yosys and nextpnr runs), ``build/formal/``, ``build/reports/`` (every
Markdown + JSON report). The runner, synthesis, formal and the benchmarks all import these.
"""

import hashlib
import json
import os
from pathlib import Path

__all__ = ["ROOT", "BUILD", "REPORTS", "digest", "work_dir"]

ROOT = Path(os.environ.get("ATTNFORGE_ROOT", Path.cwd()))
BUILD = ROOT / "build"
REPORTS = BUILD / "reports"


def digest(*parts):
    """A short stable hex digest of JSON-able ``parts`` (a unit name and its parameters, say)."""
    text = json.dumps(parts, sort_keys=True, default=repr)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def work_dir(kind, name, params=None, suffix=""):
    """``build/<kind>/<name>-<digest of name and params><suffix>``, created."""
    path = BUILD / kind / f"{name}-{digest(name, dict(params or {}))}{suffix}"
    path.mkdir(parents=True, exist_ok=True)
    return path
