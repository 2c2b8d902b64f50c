"""Unit registry and Verilog emission shared by the Python API, the CLI, the runner and synthesis."""

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Unit", "UNITS", "build", "verilog", "emit"]


@dataclass(frozen=True)
class Unit:
    """A generator the command line and the reports know by name.

    ``target`` is ``"module:Class"`` below :mod:`attnforge.rtl`; its keyword-only constructor
    parameters (with their defaults) are the unit's generator parameters.
    """
    name: str
    target: str
    summary: str

    @property
    def cls(self):
        module, cls = self.target.split(":")
        return getattr(importlib.import_module(f"{__package__}.{module}"), cls)

    @property
    def params(self):
        """``{name: default}`` of the generator parameters."""
        sig = inspect.signature(self.cls.__init__)
        return {p.name: p.default for p in sig.parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY}


UNITS = {u.name: u for u in [
    Unit("mac", "mac:MAC", "multi-precision MAC / PE (FX16, INT8, INT4, INT2)"),
    Unit("mac_fx16", "mac:FX16MAC", "baseline: FX16-only MAC with the same ports"),
    Unit("mac_separate", "mac:SeparateMAC", "baseline: four fixed-precision MACs side by side"),
    Unit("topk", "topk:TopK", "top-k engine: quick-select, P comparators, run-time n and k"),
    Unit("topk_bitonic", "_bitonic:BitonicTopK", "baseline: top-k by a full bitonic sorting network"),
    Unit("softmax", "softmax:Softmax", "streaming max-subtracted fixed-point softmax (dense or sparse rows)"),
    Unit("detector", "detector:Detector", "threshold/top-k detector (element, 1xV, BxB) + greedy lane scheduler"),
    Unit("progressive_quant", "progressive_quant:ProgressiveQuant", "progressive quantization: MSB-plane softmax, LSB plane fetched below a threshold"),
]}


def build(unit, **params):
    """Instantiate a registered unit by name; bad parameters raise ``ValueError``."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(sorted(UNITS))}, not {unit!r}")
    known = UNITS[unit].params
    for name in params:
        if name not in known:
            raise ValueError(f"{unit} has no parameter {name!r} "
                             f"(parameters: {', '.join(known) or 'none'})")
    return UNITS[unit].cls(**params)


def verilog(component, name="top"):
    """Verilog text of ``component`` with top module ``name`` (no source paths in it)."""
    from amaranth.back import verilog as back
    return back.convert(component, name=name, emit_src=False)


def emit(component, path, name=None):
    """Write ``component``'s Verilog to ``path``; the top module is ``name`` or the file's stem.

    Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(verilog(component, name=name or path.stem))
    return path
