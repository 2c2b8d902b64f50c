"""Lane figures (docs/lane.md section 7): cycles per head from the **cycle model**
(``attnforge.golden.lane.cycles``), phase breakdown, RMMU utilization per phase, accuracy of
the lane's arithmetic on real fixture heads, and the **RTL** top level's measured cycles on its
simulated point against the model.

    python benchmarks/lane.py          -> build/reports/lane_bench.md / .json / .png
    python benchmarks/lane.py --long   also the record's long sim points (a Verilator build of
                                       many minutes each; docs/lane.md TODO 6)

``cycles[T][mode]`` (T as a string, mode in "dense", "0.9", "0.95") is the target-mode figure:
32x32 blocks (= the query tile), INT4 estimate, sigma = 0.25, d = 64, a 32 x 16 RMMU split
4 (estimate) + 28 (compute) rows, the design's pipelined tile schedule -- MODEL figures (no
RTL simulation at these sizes). ``cycles_rtl_schedule`` is the same model with the schedule
the RTL top level implements today (``schedule="rtl"``: projections on chip, a tile's phases
back to back, dense on the compute group). ``rtl_points`` are measured on ``rtl/lane.py``
(cocotb on Verilator, ``attnforge.testbench.lane.cycles_vs_model``) at the record's sim point
(T = 32, d = 8; with ``--long`` also the long points) and equal the
``schedule="rtl"`` model there (the test asserts it). ``lane_bench.png``: cycles per head vs T
(model) beside the RTL-measured heads and the model of the same heads.
``cycles_element`` is element granularity. Synthetic heads (Gaussian Q, K, V) for T > 512; the
masks of real heads (fixtures, T ~ 300) are evaluated separately for the element-granularity
gather fraction.
"""

import sys

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


def rtl_points(long=False):
    """The RTL top level (rtl/lane.py, cocotb on Verilator, no gaps/stalls) at the record's
    sim points (``long``: the long ones too): ``{point id: figures}``, status cycles per head
    against the model with the RTL's schedule and the pipelined design's model (outputs
    checked bit for bit by the bench), plus ``equal``: RTL == model on every head."""
    from attnforge.rtl import unit
    from attnforge.testbench.runner import measure
    out = {}
    for point in unit("lane").sim:
        if point.long and not long:
            continue
        figs = measure("lane", point.params, "cycles_vs_model")
        figs["equal"] = all(f["rtl"] == f["model_rtl"] for f in figs["cycles"].values())
        out[point.label] = figs
    return out


def rtl_table(figs):
    cyc = figs["cycles"]
    dense = cyc["dense"]["rtl"]
    return [[label, f["rtl"], f["model_rtl"], f["model_pipelined"], f["rtl"] / dense]
            for label, f in cyc.items()]


def plot(path, cyc, as_built, rtl):
    """``lane_bench.png``: (left) model cycles per head vs T at the issue's sizes, the
    pipelined design and the schedule the RTL implements; (right) every RTL-measured head
    with the ``schedule="rtl"`` model of the same head (they coincide)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (matplotlib.ticker below)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.8),
                                 gridspec_kw={"width_ratios": [1.1, 1]})
    ts = [int(t) for t in cyc]
    for mode, color in zip(MODES, ("k", "tab:blue", "tab:red")):
        name = "dense" if mode == "dense" else f"{float(mode):.0%} sparse"
        ax.plot(ts, [cyc[str(t)][mode] for t in ts], "o-", color=color,
                label=f"{name}, pipelined design (model)")
        ax.plot(ts, [as_built[str(t)][mode] for t in ts], "s--", color=color, alpha=0.6,
                label=f"{name}, as built (model, schedule=\"rtl\")")
    ax.set(xscale="log", yscale="log", xlabel="T (tokens)", ylabel="cycles per head",
           title="d 64, INT4, 32x32 blocks, 32 x 16 RMMU (model)")
    ax.set_xticks(ts, [str(t) for t in ts])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    xs, labels, x = [], [], 0.0
    for figs in rtl.values():
        p = figs["params"]
        for label, f in figs["cycles"].items():
            bx.bar(x, f["rtl"], color="tab:green", alpha=0.7,
                   label="RTL (cocotb, Verilator)" if not xs else None)
            bx.plot(x, f["model_rtl"], "kx", ms=9,
                    label="model, schedule=\"rtl\"" if not xs else None)
            xs.append(x)
            labels.append(f"{label}  (T{p['max_t']} d{p['d']} {p['rows']}x{p['cols']})")
            x += 1
        x += 0.5
    bx.set_xticks(xs, labels, rotation=60, fontsize=6, ha="right")
    bx.set(ylabel="cycles per head", title="RTL-measured heads vs the model")
    bx.grid(alpha=0.3, axis="y")
    bx.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=()):
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
    rtl = rtl_points(long="--long" in argv)
    for pid, figs in rtl.items():
        p = figs["params"]
        md += [f"## RTL top level, measured (rtl/lane.py, cocotb on Verilator, no gaps/stalls; "
               f"sim point `{pid}`: T = {p['max_t']}, d = {p['d']}, {p['rows']} x {p['cols']} "
               f"RMMU split {p['est_rows']} + {p['rows'] - p['est_rows']}, "
               f"{p['block']}x{p['block']} blocks = the query tile, m = 2; output bit-exact)",
               "", "`model (rtl)`: `cycles()` with `schedule=\"rtl\"` (asserted equal by the "
               "bench); `model (pipelined)`: the design's schedule (projections on chip, "
               "softmax hidden behind the next tile's scores, dense on all rows). RTL == model "
               f"on every head: **{'yes' if figs['equal'] else 'NO'}**.", "",
               md_table(["config", "RTL cycles", "model (rtl)", "model (pipelined)",
                         "RTL / RTL dense"], rtl_table(figs)), ""]
    from attnforge.paths import REPORTS
    REPORTS.mkdir(parents=True, exist_ok=True)
    png = plot(REPORTS / "lane_bench.png", cyc, as_built, rtl)
    md += [f"![cycles per head]({png.name})", ""]
    write_report("lane_bench", "\n".join(md),
                 {"model": True, "rtl_confirmed": False,
                  "rtl_equal_model": all(f["equal"] for f in rtl.values()),
                  "cycles": cyc, "cycles_rtl_schedule": as_built,
                  "cycles_element": cyc_el, "cycles_2048_rows36": alt, "ratio": ratio,
                  "ratio_element": ratio_el, "phases": {t: {m: detail[t][m]["phases"]
                                                            for m in MODES} for t in detail},
                  "utilization": {t: {m: detail[t][m]["utilization"] for m in MODES}
                                  for t in detail},
                  "detail": detail, "fixture_gather_element": gath, "accuracy": acc,
                  "rtl_points": rtl, "plot": png.name})
    print("\n".join(md))


if __name__ == "__main__":
    main(sys.argv[1:])
