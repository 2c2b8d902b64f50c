"""Lane figures (docs/lane.md section 7): cycles per head from the **cycle model**
(``attnforge.golden.lane.cycles``), phase breakdown, RMMU utilization per phase, accuracy of
the lane's arithmetic on real fixture heads, and the **RTL** top level's measured cycles on its
simulated point against the model.

    python benchmarks/lane.py      -> build/reports/lane_bench.md / .json

``cycles[T][mode]`` (T as a string, mode in "dense", "0.9", "0.95") is the target-mode figure:
32x32 blocks (= the query tile), INT4 estimate, sigma = 0.25, d = 64, a 32 x 16 RMMU split
4 (estimate) + 28 (compute) rows, the design's pipelined tile schedule -- MODEL figures (no
RTL simulation at these sizes). ``cycles_rtl_schedule`` is the same model with the schedule
the RTL top level implements today (``schedule="rtl"``: projections on chip, a tile's phases
back to back, dense on the compute group). ``rtl_points`` are measured on ``rtl/lane.py``
(cocotb on Verilator, ``attnforge.testbench.lane.cycles_vs_model``) at the record's sim point
(T = 32, d = 8) and equal the ``schedule="rtl"`` model there (the test asserts it).
``cycles_element`` is element granularity. Synthetic heads (Gaussian Q, K, V) for T > 512; the
masks of real heads (fixtures, T ~ 300) are evaluated separately for the element-granularity
gather fraction.
"""

import numpy as np

from attnforge.golden.attention import HeadConfig, attend_float, keep_count, to_fx
from attnforge.golden.attention_eval import EVAL_LONG, fixture_heads, fixture_projections
from attnforge.golden.lane import (LaneConfig, LaneParams, auto_config, cycles, int_projection,
                                   run_lane)
from attnforge.golden.numbers import float_to_fx, fx_to_float
from attnforge.reports import md_table, write_report

D, SIGMA, M = 64, 0.25, 16
TS = (128, 512, 2048)
MODES = ("dense", "0.9", "0.95")
PHASES = ("project", "estimate", "detect", "scores", "softmax", "av", "stalls")


def params_for(t, d=D, rows=32, schedule="pipelined"):
    """The issue's lane (latencies from the detector's and softmax's ``latency``)."""
    return LaneParams(max_t=max(t, 512), d=d, rows=rows, cols=16, est_rows=4, tile=32,
                      tile_m=32, det_per_beat=32, sm_per_beat=16, schedule=schedule)


def one(t, mode, gran, rng_seed=0, rows=32, schedule="pipelined"):
    rng = np.random.default_rng(rng_seed)
    # to_fx's step 1 (1/sqrt(d) folded into Q), without golden.attention's T <= 512 check
    q, k, v = (rng.normal(0, 1, (t, D)) for _ in range(3))
    qi, ki, vi = float_to_fx(q / np.sqrt(D), 8), float_to_fx(k, 8), float_to_fx(v, 8)
    params = params_for(t, rows=rows, schedule=schedule)
    pq, pk = int_projection(D, M, seed=1)
    if mode == "dense":
        cfg = LaneConfig(t=t, mode="dense", m=M)
        res = run_lane(params, cfg, qi, ki, vi, plan_only=True)
    else:
        c = 32 if gran == "32x32" else 1
        cfg = LaneConfig(t=t, m=M, granularity=gran, k=keep_count(-(-t // c), float(mode)))
        cfg = auto_config(params, cfg, qi, ki, pq, pk)
        res = run_lane(params, cfg, qi, ki, vi, pq, pk, plan_only=True)
    return cycles(params, cfg, res)


def accuracy():
    """Mean relative error (vs float64 dense) of the lane's FX16 output on the evaluation
    fixture heads of layer 2 (calibrated INT8-quantized projection, INT4 estimate)."""
    rows, data = [], []
    heads = [h for h in fixture_heads(EVAL_LONG) if h[1] == 2]
    projs = fixture_projections(SIGMA)
    for label, gran, sp in (("dense", None, None), ("element 0.9", "element", 0.9),
                            ("32x32 0.9", "32x32", 0.9), ("32x32 0.75", "32x32", 0.75)):
        errs = []
        for name, layer, h, q, k, v in heads:
            q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
            t, d = q.shape
            qi, ki, vi = to_fx(q, k, v, 8)
            params = params_for(t, d)
            ref = attend_float(q, k, v)
            if gran is None:
                cfg = LaneConfig(t=t, mode="dense")
                r = run_lane(params, cfg, qi, ki, vi)
            else:
                pq, pk = int_projection(d, projs[(layer, h)].dim, proj=projs[(layer, h)])
                head = HeadConfig(granularity="element", sparsity=sp) if gran == "element" else \
                    HeadConfig(algorithm="bssa", block=32, sparsity=sp)
                cfg = auto_config(params, LaneConfig.from_head(head, t, d=d), qi, ki, pq, pk)
                r = run_lane(params, cfg, qi, ki, vi, pq, pk)
            o = fx_to_float(r.out, 8)
            errs.append(float(np.abs(o - ref).mean() / np.abs(ref).mean()))
        rows.append([label, len(errs), float(np.mean(errs)), float(np.max(errs))])
        data.append({"config": label, "heads": len(errs), "mean_rel_err": float(np.mean(errs)),
                     "max_rel_err": float(np.max(errs))})
    return rows, data


def fixture_gather():
    """Gathered fraction (union of a 32-query tile's kept keys) on real heads, element
    granularity, 90 % and 95 %, calibrated INT4 estimate."""
    out = {}
    heads = fixture_heads(EVAL_LONG[:1])
    projs = fixture_projections(SIGMA)
    for sp in (0.9, 0.95):
        fr = []
        for name, layer, h, q, k, v in heads:
            q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
            t, d = q.shape
            qi, ki, vi = to_fx(q, k, v, 8)
            params = params_for(t, d)
            pq, pk = int_projection(d, projs[(layer, h)].dim, proj=projs[(layer, h)])
            cfg = auto_config(params, LaneConfig.from_head(HeadConfig(sparsity=sp), t, d=d),
                              qi, ki, pq, pk)
            res = run_lane(params, cfg, qi, ki, vi, pq, pk, plan_only=True)
            fr.append(cycles(params, cfg, res)["gathered_fraction"])
        out[str(sp)] = {"mean": float(np.mean(fr)), "min": float(np.min(fr)),
                        "max": float(np.max(fr)), "heads": len(fr)}
    return out


def rtl_points():
    """The RTL top level (rtl/lane.py, cocotb on Verilator, no gaps/stalls) at the record's
    first sim point: status cycles per head against the model with the RTL's schedule and
    the pipelined design's model (outputs checked bit for bit by the bench)."""
    from attnforge.rtl import unit
    from attnforge.testbench.runner import measure
    point = unit("lane").sim[0]
    figs = measure("lane", point.params, "cycles_vs_model")
    cyc = figs["cycles"]
    dense = cyc["dense"]["rtl"]
    rows = [[label, f["rtl"], f["model_rtl"], f["model_pipelined"], f["rtl"] / dense]
            for label, f in cyc.items()]
    return rows, figs

def main():
    cyc, cyc_el, detail = {}, {}, {}
    for t in TS:
        cyc[str(t)], cyc_el[str(t)], detail[str(t)] = {}, {}, {}
        for mode in MODES:
            r = one(t, mode, "32x32")
            cyc[str(t)][mode] = r["total"]
            detail[str(t)][mode] = r
            if mode != "dense":
                e = one(t, mode, "element")
                cyc_el[str(t)][mode] = e["total"]
                detail[str(t)][mode + "_element"] = e
            else:
                cyc_el[str(t)][mode] = r["total"]
    alt = {m: one(2048, m, "32x32", rows=36)["total"] for m in MODES}
    as_built = {str(t): {m: one(t, m, "32x32", schedule="rtl")["total"] for m in MODES}
                for t in TS}
    ratio = {t: {m: cyc[t][m] / cyc[t]["dense"] for m in MODES[1:]} for t in cyc}
    ratio_el = {t: {m: cyc_el[t][m] / cyc_el[t]["dense"] for m in MODES[1:]} for t in cyc_el}
    md = ["# Lane figures — cycle model at the issue's sizes; RTL measured at T = 32", "",
          "d = 64, INT4 estimate, sigma = 0.25 (m = 16), RMMU 32 x 16 split 4 estimate + 28 "
          "compute rows (dense: all 32 compute), query tile 32, detector 32 scores/beat "
          "(top-k), softmax 16 elements/beat. Synthetic Gaussian heads. "
          "`golden/lane.py: cycles`, docs/lane.md.", "",
          "## Cycles per head, 32x32 blocks (the target mode)", "",
          md_table(["T", "dense", "90 %", "95 %", "90 % / dense", "95 % / dense"],
                   [[t, cyc[t]["dense"], cyc[t]["0.9"], cyc[t]["0.95"], ratio[t]["0.9"],
                     ratio[t]["0.95"]] for t in cyc]), "",
          "The same heads with the schedule the RTL implements today (`schedule=\"rtl\"`: "
          "projections on chip, a tile's scores, softmax and A·V back to back, dense on the "
          "compute group): "
          + "; ".join(f"T = {t}: " + ", ".join(f"{m}: {as_built[t][m]:,}" for m in MODES)
                      + f" (95 % / dense = {as_built[t]['0.95'] / as_built[t]['dense']:.3f})"
                      for t in as_built) + ".", "",
          "Alternative array 36 x 16 (4 estimate + 32 compute rows, so d = 64 is two full "
          "passes), T = 2048: " + ", ".join(f"{m}: {alt[m]:,}" for m in MODES)
          + f" (95 % / dense = {alt['0.95'] / alt['dense']:.3f}).", "",
          "## Cycles per head, element granularity", "",
          md_table(["T", "dense", "90 %", "95 %", "90 % / dense", "95 % / dense",
                    "gathered 95 %"],
                   [[t, cyc_el[t]["dense"], cyc_el[t]["0.9"], cyc_el[t]["0.95"],
                     ratio_el[t]["0.9"], ratio_el[t]["0.95"],
                     detail[t]["0.95_element"]["gathered_fraction"]] for t in cyc_el]), "",
          "## Phase breakdown (busy cycles per unit; stalls = compute group idle)", ""]
    rows = []
    for t in cyc:
        for key, r in detail[t].items():
            rows.append([t, key, r["total"], *[r["phases"][p] for p in PHASES],
                         r["kept_fraction"], r["gathered_fraction"]])
    md += [md_table(["T", "mode", "total", *PHASES, "kept", "gathered"], rows), "",
           "## RMMU utilization per phase (useful MACs of the gathered GEMMs / busy cycles x "
           "peak of the group's rows)", ""]
    rows = [[t, key, *[r["utilization"].get(p, "") for p in ("project", "estimate", "scores",
                                                            "av")]]
            for t in cyc for key, r in detail[t].items()]
    md += [md_table(["T", "mode", "project", "estimate", "scores", "A·V"], rows), ""]
    gath = fixture_gather()
    md += ["## Element granularity on real heads (long_printing, 18 heads, T ~ 300)", "",
           md_table(["sparsity", "gathered fraction mean", "min", "max"],
                    [[s, g["mean"], g["min"], g["max"]] for s, g in gath.items()]), ""]
    acc_rows, acc = accuracy()
    md += ["## Accuracy of the lane arithmetic on real heads (layer 2 of the evaluation "
           "fixtures, vs float64 dense)", "",
           md_table(["config", "heads", "mean rel. err", "max rel. err"], acc_rows), ""]
    rtl_rows, rtl = rtl_points()
    p = rtl["params"]
    md += [f"## RTL top level, measured (rtl/lane.py, cocotb on Verilator, no gaps/stalls; "
           f"T = {p['max_t']}, d = {p['d']}, {p['rows']} x {p['cols']} RMMU split "
           f"{p['est_rows']} + {p['rows'] - p['est_rows']}, {p['block']}x{p['block']} blocks = "
           f"the query tile, m = 2; output bit-exact)", "",
           "`model (rtl)`: `cycles()` with `schedule=\"rtl\"` (asserted equal by the bench); "
           "`model (pipelined)`: the design's schedule (projections on chip, softmax hidden "
           "behind the next tile's scores, dense on all rows).", "",
           md_table(["config", "RTL cycles", "model (rtl)", "model (pipelined)",
                     "RTL / RTL dense"], rtl_rows), ""]
    write_report("lane_bench", "\n".join(md),
                 {"model": True, "rtl_confirmed": False, "cycles": cyc,
                  "cycles_rtl_schedule": as_built,
                  "cycles_element": cyc_el, "cycles_2048_rows36": alt, "ratio": ratio, "ratio_element": ratio_el,
                  "detail": detail, "fixture_gather_element": gath, "accuracy": acc,
                  "rtl_points": rtl})
    print("\n".join(md))


if __name__ == "__main__":
    main()
