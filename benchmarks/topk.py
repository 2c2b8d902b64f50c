"""Top-k benchmark: cycles per operation against N/P for the radix engine (``topk``), the
quick-select baseline (``topk_quickselect``) and the bitonic baseline (``topk_bitonic``), on
uniform, Gaussian, clustered and attention-like rows and on adversarial inputs; area of each.

* Cycles come from the golden cycle models (:meth:`TopKModel.cycles`,
  :meth:`QuickSelectModel.cycles`, :meth:`BitonicModel.cycles`), which the RTL matches exactly
  (asserted by ``tests/test_topk.py`` and the cocotb ``exact_cycles`` test); here
  :func:`attnforge.testbench.runner.measure` runs ``exact_cycles`` on Verilator for each engine
  at its regression point and reports the measured latency.
* One operation = request handshake to the handshake of its last output beat, scores offered
  every cycle, output never stalled, including the N/P-beat load and the emission scan.
* Area: :func:`attnforge.synth.yosys.synthesize` of each engine at the same parameters.

``build/reports/topk_bench.json`` has a top-level ``summary`` (uniform data, N = 1024, P = 16,
the radix engine; the worse of k = N/10 and k = N/2).

Run from the repository root: ``python benchmarks/topk.py [--no-rtl] [--no-synth]``.
Environment: ``TOPK_TRIALS`` (default 200 rows per cell), ``TOPK_AREA`` (default ``16x4``).
"""

import os
import sys

import numpy as np

from attnforge.golden.topk import TopKModel, cycle_bound, radix_select
from attnforge.golden.topk_bitonic import BitonicModel
from attnforge.golden.topk_quickselect import QuickSelectModel
from attnforge.reports import md_table, write_report
from attnforge.testbench.topk import adversarial, distribution

SCORE_BITS = 16
TRIALS = int(os.environ.get("TOPK_TRIALS", "200"))
KINDS = ("uniform", "gaussian", "clustered", "attention")
ENGINES = {"topk": TopKModel, "topk_quickselect": QuickSelectModel,
           "topk_bitonic": BitonicModel}
SIZES = ((1024, 16), (1024, 4), (256, 16))


def cycle_table():
    rows, data = [], []
    for N, P in SIZES:
        unit = N / P
        for k in (max(N // 10, 1), N // 2):
            for kind in KINDS:
                rng = np.random.default_rng(2024 + N + P + k)
                xs = [distribution(rng, kind, N, SCORE_BITS) for _ in range(TRIALS)]
                misses = np.mean([radix_select(x, k, P, SCORE_BITS, 8)[2][0][0] == "memory"
                                  for x in xs])
                for name, cls in ENGINES.items():
                    model = cls(max_n=N, score_bits=SCORE_BITS, per_beat=P)
                    c = np.array([model.cycles(N, k, x) for x in xs]) / unit
                    rec = {"engine": name, "N": N, "P": P, "k": k, "data": kind,
                           "mean": float(c.mean()), "p99": float(np.percentile(c, 99)),
                           "worst": float(c.max())}
                    if name == "topk":
                        rec["bracket_miss_rate"] = float(misses)
                    data.append(rec)
                    rows.append([name, N, P, k, kind, rec["mean"], rec["p99"], rec["worst"],
                                 f"{misses:.3f}" if name == "topk" else ""])
            for name, cls in ENGINES.items():
                model = cls(max_n=N, score_bits=SCORE_BITS, per_beat=P)
                adv = {a: model.cycles(N, k, x) / unit for a, x in adversarial(N).items()}
                worst = max(adv, key=adv.get)
                data.append({"engine": name, "N": N, "P": P, "k": k, "data": "adversarial",
                             "per_input": adv, "worst": adv[worst], "worst_input": worst})
                rows.append([name, N, P, k, "adversarial", "", "", f"{adv[worst]:.2f} ({worst})",
                             ""])
    header = ["engine", "N", "P", "k", "data", "mean /(N/P)", "p99 /(N/P)", "worst /(N/P)",
              "bracket misses"]
    return md_table(header, rows), data


def summary(cycles):
    recs = [r for r in cycles if r["engine"] == "topk" and r["N"] == 1024 and r["P"] == 16
            and r["data"] == "uniform"]
    worst = max(recs, key=lambda r: r["mean"])
    return {"n": 1024, "p": 16, "mean_over_n_p": worst["mean"],
            "p99_over_n_p": max(r["p99"] for r in recs),
            "per_k": {r["k"]: {"mean": r["mean"], "p99": r["p99"]} for r in recs},
            "cycle_bound_over_n_p": cycle_bound(1024, 16) / 64}


def rtl_confirm():
    """Verilator runs of the cocotb ``exact_cycles`` test (RTL == model, asserted there), one
    per engine at its regression point (the build the regression already made)."""
    from attnforge.rtl import unit as unit_record
    from attnforge.testbench.runner import measure
    out = {}
    for name in ENGINES:
        params = unit_record(name).sim[-1].params
        figs = measure(name, params, "exact_cycles")
        out[name] = {"params": params, "latency": figs["latency"],
                     "requests": len(figs["requests"]),
                     "mean_cycles": float(np.mean([f["cycles"] for f in figs["requests"]]))}
    return out


def area_table():
    from attnforge.synth.yosys import synthesize
    rows, data = [], []
    # The bitonic network is slow to map (N=16: minutes of abc), so the default comparison is
    # N=16, P=4; TOPK_AREA="16x4,64x16" asks for more (the bitonic column only up to N=16).
    sizes = [tuple(map(int, s.split("x"))) for s in
             os.environ.get("TOPK_AREA", "16x4").split(",")]
    for N, P in sizes:
        params = {"max_n": N, "score_bits": SCORE_BITS, "per_beat": P}
        variants = [("topk", {}), ("topk", {"digit_bits": 6}), ("topk_quickselect", {}),
                    ("topk_bitonic", {})]
        for name, extra in variants:
            if name == "topk_bitonic" and N > 16:
                continue
            a = synthesize(name, {**params, **extra})
            data.append({"engine": name, "params": {**params, **extra}, **a})
            label = name + (f" (R = {extra['digit_bits']})" if extra else
                            " (R = 8)" if name == "topk" else "")
            rows.append([label, N, P, a["cells"], a["ffs"], a["transistors"], a["depth"]])
    header = ["engine", "N", "P", "cells", "FFs", "transistors", "depth"]
    return md_table(header, rows), data


def main():
    md = ["# Top-k engines benchmark", "",
          f"Scores: {SCORE_BITS}-bit signed, {TRIALS} rows per cell. Cycles per operation / "
          "(N/P): request handshake to last output handshake, no input gaps, no output stalls, "
          "including the N/P-beat load and the emission scan (golden cycle models, matched "
          "exactly by the RTL). Data: uniform; Gaussian (sigma = range/8); clustered (8 "
          "distinct values); attention (softmax of Gaussian logits with a few strong keys, "
          "scaled to the score range); adversarial = worst of sorted, reverse, all equal, "
          "3 values, organ pipe, sawtooth, sample decoy.", ""]
    table, cycles = cycle_table()
    data = {"summary": summary(cycles), "cycles": cycles}
    md += ["## Summary (topk, uniform, N = 1024, P = 16, worse of k = 102 / 512)", "",
           f"mean {data['summary']['mean_over_n_p']:.3f} N/P, p99 "
           f"{data['summary']['p99_over_n_p']:.3f} N/P, proven worst case "
           f"{data['summary']['cycle_bound_over_n_p']:.3f} N/P.", "", table, ""]
    if "--no-rtl" not in sys.argv:
        rtl = rtl_confirm()
        md += ["## RTL confirmation (Verilator, cocotb `exact_cycles`)", "",
               md_table(["engine", "params", "requests (each == model)", "mean cycles",
                         "latency (n = k = 1)"],
                        [[n, str(r["params"]), r["requests"], r["mean_cycles"], r["latency"]]
                         for n, r in rtl.items()]), ""]
        data["rtl"] = rtl
    if "--no-synth" not in sys.argv:
        table, area = area_table()
        md += ["## Area (Yosys generic CMOS, `synthesize()`, score_bits 16)", "",
               "Transistors include 24 per flip-flop; memories are flip-flops at these sizes.",
               "", table, ""]
        data["area"] = area
    path = write_report("topk_bench", "\n".join(md), data)
    print(path.read_text())


if __name__ == "__main__":
    main()
