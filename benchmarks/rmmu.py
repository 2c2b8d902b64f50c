"""RMMU figures: peak MACs/cycle, utilization (cocotb + Verilator), emission and build times.

Utilization is measured on a 32 x 2 array: an operation's cycle count depends on the rows, the
M-tile depth and the number of tiles, not on the number of columns (every column works in
lockstep), so a 32 x 2 array with N = t * 2n runs exactly as the 32 x 16 default with
N = t * 16n. One shape is run on both to confirm the cycle counts agree.

Writes build/reports/rmmu_bench.md and .json. Run by `make bench`. Area: `make synth` (rmmu.md).
"""

import json
import shutil
import time

from attnforge.golden.numbers import Precision
from attnforge.rtl import verilog
from attnforge.rtl.rmmu import RMMU
from attnforge.reports import md_table, write_report
from attnforge.testbench.rmmu import BENCH_ENV
from attnforge.testbench import runner

M, N_TILES = 512, 4
NARROW = dict(rows=32, cols=2)


def measure(params, runs):
    """Figures of the ``utilization`` testcase for ``runs`` (see testbench/rmmu.py)."""
    return runner.measure("rmmu", params, "utilization",
                          extra_env={BENCH_ENV: json.dumps(runs)})["runs"]


def op(p, k, *, cols, row0=0, nrows=32, group=0, m=M, tiles=N_TILES):
    return {"group": group, "row0": row0, "nrows": nrows, "precision": p.name, "m": m, "k": k,
            "n": tiles * cols * p.lanes}


def main():
    default = RMMU()
    peak = [[p.name, default.peak_macs(p)] for p in Precision]

    cols = NARROW["cols"]
    runs = [[op(p, k, cols=cols)] for p in Precision for k in (64, 256, 1024)]
    # DOTA's mixed use: an INT2 score estimate on 8 rows beside FX16 attention on 24 rows,
    # sized so both finish together (1 pass x 10 N-tiles vs 10 passes x 1 N-tile).
    runs.append([op(Precision.INT2, 64, cols=cols, nrows=8, tiles=10),
                 op(Precision.FX16, 240, cols=cols, row0=8, nrows=24, group=1, tiles=1)])
    util = measure(NARROW, runs)

    start = time.monotonic()
    verilog(RMMU(), "rmmu")
    emit_s = time.monotonic() - start

    # the same shape on the full default array (N scaled with the columns): same cycles;
    # its build directory is cleared first, so the build time is a full Verilator + C++ build
    check_shape = dict(p=Precision.INT2, k=256, m=64, tiles=2)
    narrow = measure(NARROW, [[op(cols=cols, **check_shape)]])[0]
    work, _ = runner.prepare("rmmu", {})
    shutil.rmtree(work)
    full = measure({}, [[op(cols=default.cols, **check_shape)]])[0]
    build_s = float((work / "build.seconds").read_text())

    rows = []
    for r in util:
        ops = r["ops"]
        label = " + ".join(f"{o['precision']} ({o['nrows']} rows)" for o in ops)
        rows.append([label, ", ".join(str(o["m"]) for o in ops),
                     ", ".join(str(o["k"]) for o in ops), ", ".join(str(o["n"]) for o in ops),
                     r["cycles"], r["useful_macs"], r["peak_macs_per_cycle"],
                     f"{100 * r['utilization']:.1f} %"])
    md = ["# RMMU benchmark (cocotb + Verilator)", "",
          "Produced by `make bench` (benchmarks/rmmu.py). No valid gaps, no ready stalls; "
          "cycles from the first descriptor accepted to the last result beat, weight loading "
          "and pipeline fill/drain included. Utilization = useful MACs (M*K*N) / (cycles x "
          "peak MACs/cycle of the rows in use). Measured on a 32 x 2 array with "
          f"N = {N_TILES} N-tiles (the 32 x 16 default takes the same cycles for the same "
          "tiles; checked below).", "",
          "## Peak throughput of the default 32 x 16 array", "",
          md_table(["precision", "MACs/cycle"], peak), "",
          "## Utilization", "",
          md_table(["operation(s)", "M", "K", "N", "cycles", "useful MACs",
                    "peak MACs/cycle (cols = 2)", "utilization"], rows), "",
          "## Cycle counts do not depend on the columns", "",
          md_table(["array", "INT2 M=64 K=256, N-tiles", "cycles"],
                   [["32 x 2", 2, narrow["cycles"]], ["32 x 16 (default)", 2, full["cycles"]]]),
          "", "## Generator", "",
          md_table(["figure", "value"], [
              ["emit Verilog of the default 32 x 16 array (s)", round(emit_s, 1)],
              ["Verilator build of the default array, hierarchical (s)", build_s]])]
    data = {"peak": dict(peak), "utilization": util, "narrow_check": narrow, "full_check": full,
            "emit_seconds": emit_s, "verilator_build_seconds": build_s}
    print(write_report("rmmu_bench", "\n".join(md), data))


if __name__ == "__main__":
    main()
