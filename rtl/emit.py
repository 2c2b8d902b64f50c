"""Unit registry and Verilog emission shared by the Python API, the CLI, the runner and synthesis."""

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Unit", "UNITS", "build", "verilog", "emit", "EmitPlatform"]


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
    Unit("rmmu", "rmmu:RMMU", "reconfigurable PE array: GEMMs on row groups, per-group precision"),
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


class EmitPlatform:
    """The ``platform`` that :func:`verilog` passes to ``elaborate``.

    A generator that repeats one submodule many times (the RMMU's PE array) asks for it with
    :meth:`shared_module` and instantiates the returned module name with ``Instance``: the
    submodule's Verilog is then written once instead of once per instance, which keeps emission
    and Verilator builds of large arrays fast. In the Amaranth simulator ``platform`` is
    ``None`` and the generator instantiates the component directly.
    """

    def __init__(self):
        self._modules = {}

    @property
    def shared_modules(self):
        """Names of the modules emitted once and instantiated (after :meth:`convert`)."""
        return tuple(self._modules)

    def shared_module(self, name, component):
        """Register ``component`` to be emitted once as Verilog module ``name``; returns
        ``name``. Registering a different component under a taken name is a bug."""
        known = self._modules.setdefault(name, component)
        if known is not component and known.signature != component.signature:
            raise ValueError(f"shared module {name!r} registered with two different signatures")
        return name

    def convert(self, component, name):
        from amaranth.back import verilog as back
        texts = [back.convert(component, name=name, emit_src=False, platform=self)]
        done = set()
        while len(done) < len(self._modules):
            for mod, sub in list(self._modules.items()):
                if mod not in done:
                    done.add(mod)
                    texts.append(back.convert(sub, name=mod, emit_src=False, platform=self))
        return "\n".join(texts)


def verilog(component, name="top"):
    """Verilog text of ``component`` with top module ``name`` (no source paths in it)."""
    return EmitPlatform().convert(component, name)


def emit(component, path, name=None):
    """Write ``component``'s Verilog to ``path``; the top module is ``name`` or the file's stem.

    Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(verilog(component, name=name or path.stem))
    return path
