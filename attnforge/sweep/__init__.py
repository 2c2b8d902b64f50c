"""Design-space sweep and HB-BSSA search over the lane (docs/sweep.md).

``attnforge sweep SPEC.toml`` / :func:`sweep`: every point of a spec's space (generator
parameters from the unit's legal domains x run-time knobs) -> area (Yosys, cached by Verilog
digest), cycles (the lane's cycle model, checked against the RTL on a sample), accuracy (the
lane's golden model on real fixture heads); CSV/JSON/Markdown/PNG in ``build/sweeps/<name>/``.

``attnforge search SPEC.toml`` / :func:`search`: REINFORCE with a baseline over block size,
per-block precision bound and mask budget against random search, the norm-threshold heuristic
and exhaustive enumeration. Both run on Dask distributed (:mod:`.engine`).
"""

from .run import RTLMismatch, sweep
from .search import search
from .spec import Spec, SpecError, load_spec, parse_spec

__all__ = ["sweep", "search", "load_spec", "parse_spec", "Spec", "SpecError", "RTLMismatch"]
