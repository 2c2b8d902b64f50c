"""Lane figures (docs/lane.md section 7): cycles per head from the **cycle model**
(``attnforge.golden.lane.cycles``), phase breakdown, RMMU utilization per phase, accuracy of
the lane's arithmetic on real fixture heads.

    python benchmarks/lane.py      -> build/reports/lane_bench.md / .json

``cycles[T][mode]`` (T as a string, mode in "dense", "0.9", "0.95") is the target-mode figure:
32x32 blocks (= the query tile), INT4 estimate, sigma = 0.25, d = 64, a 32 x 16 RMMU split
4 (estimate) + 28 (compute) rows. ``cycles_element`` is the same at element granularity. These
are MODEL figures: the lane RTL does not exist yet, so none is confirmed by simulation.
Synthetic heads (Gaussian Q, K, V) for T > 512; the masks of real heads (fixtures, T ~ 300)
are evaluated separately for the element-granularity gather fraction.
"""

import numpy as np

from attnforge.golden.attention import HeadConfig, attend_float, keep_count, to_fx
from attnforge.golden.attention_eval import EVAL_LONG, fixture_heads, fixture_projections
from attnforge.golden.lane import (LaneConfig, LaneParams, auto_config, cycles, int_projection,
                                   run_lane)
from attnforge.golden.numbers import float_to_fx, fx_to_float
from attnforge.reports import md_table, write_report
from attnforge.rtl.softmax import softmax_latency

D, SIGMA, M = 64, 0.25, 16
TS = (128, 512, 2048)
MODES = ("dense", "0.9", "0.95")
PHASES = ("project", "estimate", "detect", "scores", "softmax", "av", "stalls")


def params_for(t, d=D, rows=32):
    p = LaneParams(max_t=max(t, 512), d=d, rows=rows, cols=16, est_rows=4, tile=32, tile_m=32,
                   det_per_beat=32, sm_per_beat=16, det_latency=3 + 9)
    return LaneParams(**{**p.__dict__, "sm_latency": softmax_latency(p.softmax_format())})


def one(t, mode, gran, rng_seed=0, rows=32):
    rng = np.random.default_rng(rng_seed)
    # to_fx's step 1 (1/sqrt(d) folded into Q), without golden.attention's T <= 512 check
    q, k, v = (rng.normal(0, 1, (t, D)) for _ in range(3))
    qi, ki, vi = float_to_fx(q / np.sqrt(D), 8), float_to_fx(k, 8), float_to_fx(v, 8)
    params = params_for(t, rows=rows)
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
    """RTL v0 (LaneCore, Amaranth simulator, no gaps/stalls) against the model on a T = 32
    head: dense and 8x8 top-k of 4 blocks (k = 4, 2, 1). Output checked against run_lane."""
    from attnforge.rtl.lane_core import LaneCore
    from attnforge.testbench.lane import simulate_core
    params = LaneParams(max_t=32, d=8, rows=4, cols=2, est_rows=1, tile=8, tile_m=8,
                        det_per_beat=1, sm_per_beat=1)
    rng = np.random.default_rng(18)
    q, k, v = (rng.normal(0, 1, (32, 8)) for _ in range(3))
    qi, ki, vi = to_fx(q, k, v, 8)
    pq, pk = int_projection(8, 2, seed=11)
    rows, data = [], []
    for label, mode, kk in (("dense", "dense", 4), ("top-4 of 4", "sparse", 4),
                            ("top-2 of 4", "sparse", 2), ("top-1 of 4", "sparse", 1)):
        cfg = auto_config(params, LaneConfig(t=32, m=2, granularity="8x8", k=kk, mode=mode),
                          qi, ki, pq, pk)
        ref = run_lane(params, cfg, qi, ki, vi, pq, pk)
        out, cyc = simulate_core(LaneCore(est_rows=1, rows=3, cols=2, d=8, block=8, max_t=32,
                                          max_k=16), params, cfg, qi, ki, vi, pq, pk)
        assert np.array_equal(out, ref.out), label
        model = cycles(params, cfg, ref)["total"]
        rows.append([label, float(ref.mask.mean()), cyc, model])
        data.append({"config": label, "kept": float(ref.mask.mean()), "rtl_cycles": cyc,
                     "model_cycles": model})
    for r in rows:
        r.append(r[2] / rows[0][2])
    return rows, data


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
    ratio = {t: {m: cyc[t][m] / cyc[t]["dense"] for m in MODES[1:]} for t in cyc}
    ratio_el = {t: {m: cyc_el[t][m] / cyc_el[t]["dense"] for m in MODES[1:]} for t in cyc_el}
    md = ["# Lane figures — CYCLE MODEL (not yet confirmed by RTL simulation)", "",
          "d = 64, INT4 estimate, sigma = 0.25 (m = 16), RMMU 32 x 16 split 4 estimate + 28 "
          "compute rows (dense: all 32 compute), query tile 32, detector 32 scores/beat "
          "(top-k), softmax 16 elements/beat. Synthetic Gaussian heads. "
          "`golden/lane.py: cycles`, docs/lane.md.", "",
          "## Cycles per head, 32x32 blocks (the target mode)", "",
          md_table(["T", "dense", "90 %", "95 %", "90 % / dense", "95 % / dense"],
                   [[t, cyc[t]["dense"], cyc[t]["0.9"], cyc[t]["0.95"], ratio[t]["0.9"],
                     ratio[t]["0.95"]] for t in cyc]), "",
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
    md += ["## RTL v0 points (LaneCore, Amaranth simulator; T = 32, d = 8, 8x8 = tile, INT4 "
           "m = 2, 1 x 2 estimate + 3 x 2 compute groups, softmax P = 1; output bit-exact)", "",
           "The model charges the projection GEMMs (not run by v0) and a pipelined tile "
           "schedule; v0 runs tile phases back to back (docs/lane.md).", "",
           md_table(["config", "kept", "RTL cycles", "model cycles", "RTL / RTL dense"],
                    rtl_rows), ""]
    write_report("lane_bench", "\n".join(md),
                 {"model": True, "rtl_confirmed": False, "cycles": cyc,
                  "cycles_element": cyc_el, "cycles_2048_rows36": alt, "ratio": ratio, "ratio_element": ratio_el,
                  "detail": detail, "fixture_gather_element": gath, "accuracy": acc,
                  "rtl_points": rtl})
    print("\n".join(md))


if __name__ == "__main__":
    main()
