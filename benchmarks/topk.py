"""Top-k engine benchmark: cycles per operation against N/P, and area against the bitonic
baseline.

* Cycles come from the golden cycle model (:meth:`TopKModel.cycles`), which the RTL matches
  exactly (asserted by ``tests/test_topk.py`` and the cocotb ``exact_cycles`` test); a Verilator
  run of ``exact_cycles`` at ``max_n=256, lanes=16`` confirms it again here.
* One operation = request handshake to the handshake of its last output beat, scores offered
  every cycle, output never stalled; it includes loading the N scores (N/P beats) and the
  emission scan.
* Area: :func:`attnforge.synth.yosys.synthesize` of ``topk`` and ``topk_bitonic`` at the same
  ``max_n`` / ``lanes`` / ``width``.

Run from the repository root: ``python benchmarks/topk.py`` (a few minutes).
"""

import json
import os
import sys
import tempfile

import numpy as np

from attnforge.golden.topk import TopKModel, cycle_bound, select
from attnforge.reports import md_table, write_report

WIDTH = 16
TRIALS = int(os.environ.get("TOPK_TRIALS", "300"))


def adversarial(N, rng):
    lo, hi = -(1 << (WIDTH - 1)), (1 << (WIDTH - 1)) - 1
    ramp = np.linspace(lo, hi, N).astype(np.int64)
    organ = np.concatenate([ramp[0::2], ramp[1::2][::-1]])
    return {
        "sorted": ramp,
        "reverse": ramp[::-1].copy(),
        "all equal": np.full(N, 5, dtype=np.int64),
        "3 values": rng.choice([-7, 0, 7], N),
        "organ pipe": organ,
        "sawtooth": (np.arange(N) % 16 - 8).astype(np.int64),
    }


def cycle_table():
    rng = np.random.default_rng(2024)
    rows, data = [], []
    for P in (4, 16):
        for N in (64, 256, 1024):
            model = TopKModel(max_n=N, width=WIDTH, lanes=P)
            for k in (max(N // 10, 1), N // 2):
                cyc, passes = [], []
                for _ in range(TRIALS):
                    x = rng.integers(-(1 << 15), 1 << 15, N)
                    cyc.append(model.cycles(N, k, x))
                    passes.append(len(select(x, k, P)[2]))
                cyc = np.array(cyc)
                adv = {name: model.cycles(N, k, x) for name, x in adversarial(N, rng).items()}
                worst_adv = max(adv, key=adv.get)
                unit = N / P
                rec = {"N": N, "k": k, "P": P, "N/P": unit, "mean": float(cyc.mean()),
                       "p99": float(np.percentile(cyc, 99)), "worst": int(cyc.max()),
                       "mean_passes": float(np.mean(passes)), "adversarial": adv,
                       "bound": cycle_bound(N, P)}
                data.append(rec)
                rows.append([N, k, P, int(unit), rec["mean"], rec["mean"] / unit, rec["p99"] / unit,
                             rec["worst"] / unit, rec["mean_passes"],
                             f"{adv[worst_adv] / unit:.2f} ({worst_adv})"])
    header = ["N", "k", "P", "N/P", "mean cycles", "mean /(N/P)", "p99 /(N/P)", "worst /(N/P)",
              "passes", "adversarial worst /(N/P)"]
    return md_table(header, rows), data


def rtl_confirm():
    """Verilator run of the cocotb exact_cycles test (RTL == model, asserted there)."""
    from attnforge.testbench.runner import run
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "fig.json")
        run("topk", {"max_n": 256, "width": WIDTH, "lanes": 16}, testcase="exact_cycles",
            extra_env={"ATTNFORGE_FIGURES": path})
        figs = json.load(open(path))["requests"]
    return figs


def area_table():
    from attnforge.synth.yosys import synthesize
    rows, data = [], []
    # The bitonic network is slow to map (N=16: ~7 min of abc on this machine), so the
    # default comparison is N=16, P=4; TOPK_AREA="16x4,32x4,32x16" asks for more.
    sizes = [tuple(map(int, s.split("x"))) for s in
             os.environ.get("TOPK_AREA", "16x4").split(",")]
    for N, P in sizes:
        params = {"max_n": N, "width": WIDTH, "lanes": P}
        q = synthesize("topk", params)
        b = synthesize("topk_bitonic", params)
        data.append({"params": params, "topk": q, "bitonic": b})
        rows.append([N, P, q["cells"], q["ffs"], q["transistors"], q["depth"],
                     b["cells"], b["ffs"], b["transistors"], b["depth"],
                     q["transistors"] / b["transistors"]])
    header = ["N", "P", "topk cells", "topk FFs", "topk transistors", "topk depth",
              "bitonic cells", "bitonic FFs", "bitonic transistors", "bitonic depth",
              "topk/bitonic transistors"]
    return md_table(header, rows), data


def main():
    md = ["# Top-k engine benchmark", "",
          f"Scores: {WIDTH}-bit signed, uniform random ({TRIALS} inputs per row). Cycles per "
          "operation: request handshake to last output handshake, no input gaps, no output "
          "stalls, including the N/P-beat load and the emission scan (golden cycle model, "
          "matched exactly by the RTL).", ""]
    table, cycles = cycle_table()
    md += [table, ""]
    data = {"cycles": cycles}
    if "--no-rtl" not in sys.argv:
        figs = rtl_confirm()
        model = TopKModel(max_n=256, width=WIDTH, lanes=16)
        md += ["## RTL confirmation", "",
               f"Verilator, `topk` max_n=256 lanes=16: {len(figs)} requests of the cocotb "
               "`exact_cycles` test, each equal to the model's count (asserted there); "
               f"mean {np.mean([f['cycles'] for f in figs]):.1f} cycles.", ""]
        data["rtl"] = figs
    if "--no-synth" not in sys.argv:
        table, area = area_table()
        md += ["## Area against the bitonic-network baseline (same N, P, width 16)", "",
               "Yosys generic CMOS flow (`synthesize()`); transistors include 24 per flip-flop. "
               "Both designs store the scores in flip-flops at these sizes.", "", table, ""]
        data["area"] = area
    path = write_report("topk_bench", "\n".join(md), data)
    print(path.read_text())


if __name__ == "__main__":
    main()
