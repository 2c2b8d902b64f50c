"""``attnforge sweep SPEC.toml``: every point of a spec's design space, evaluated on Dask.

Per point (:mod:`.lanepoint`): area from Yosys (one task per distinct generator, cached by the
Verilog digest across sweeps), cycles from the lane's cycle model and accuracy from its golden
model on real fixture heads (one task per point), and on a seeded sample of the points the RTL
run against the models (one task each). The three futures of a point meet in a merge task;
when it completes, its record is appended to ``build/sweeps/<name>/points.jsonl``, so a killed
sweep resumes (``resume=True``) without redoing a finished point. A failing task fails only its
point: the record carries ``status = "failed"`` and ``error``. At the end:

* ``points.csv`` / ``points.json``: one row / record per point: id, status, error, seed, every
  generator and run-time parameter, the figures, and ``pareto`` (not dominated in (area,
  cycles, head error) among the points that succeeded);
* ``summary.md``: the space, counts, the Pareto points, the failures, the RTL checks;
* ``cycles_vs_area.png``, ``cycles_vs_error.png``, ``knobs.png`` (:mod:`.plots`).

The model-vs-RTL check fails the sweep loudly (:class:`RTLMismatch`) after the results are
written.
"""

import csv
import json
import random
import time

import numpy as np

from ..paths import BUILD, digest
from ..reports import md_table
from . import engine, lanepoint

__all__ = ["RTLMismatch", "sweep", "pareto_flags", "out_dir", "FIGURES"]

#: Figures of a point record, in CSV column order.
FIGURES = ("transistors", "transistors_with_sram", "cells", "ffs", "memory_bits", "depth",
           "ecp5_luts", "ecp5_ffs", "ecp5_fmax", "ecp5_error", "verilog_digest", "area_cached",
           "cycles", "cycles_max", "kept_fraction", "head_error", "head_error_max", "int8_fraction",
           "heads", "rtl_cycles", "rtl_model_cycles", "rtl_ratio", "rtl_bit_exact", "seconds")
#: Dask priorities: the longest tasks first (Yosys, then the RTL simulations) so that they run
#: side by side on different workers, the quick evaluations fill in; a merge runs when ready.
PRIORITY = {"merge": 40, "area": 30, "rtl": 20, "evaluate": 10}
#: Objectives of the Pareto flag (all minimized).
OBJECTIVES = ("transistors", "cycles", "head_error")


class RTLMismatch(RuntimeError):
    """The RTL disagreed with the models on a sampled point."""


def out_dir(spec):
    return BUILD / "sweeps" / spec.name


def pareto_flags(values):
    """``values``: (n, k) array, every column minimized. True where no other row is <= in
    every column and < in one (duplicates are all on the frontier)."""
    v = np.asarray(values, dtype=float)
    flags = []
    for row in v:
        dominated = np.any(np.all(v <= row, axis=1) & np.any(v < row, axis=1))
        flags.append(not dominated)
    return flags


# -- the tasks (run on the workers) ------------------------------------------------------------------
def _evaluate(point, workload):
    t0 = time.monotonic()
    heads = lanepoint.workload_heads(workload)
    fig = lanepoint.evaluate(point["gen"], point["run"], heads)
    fig["seconds"] = round(time.monotonic() - t0, 2)
    return fig


def _rtl(point, workload, band):
    heads = lanepoint.workload_heads(workload)
    return lanepoint.rtl_check(point["gen"], point["run"], heads, band)


def _merge(point, area, fig, rtl=None):
    rec = {**point, "status": "ok", "error": "", **fig}
    rec.update({k: v for k, v in area.items() if k != "cached"}, area_cached=area["cached"])
    if rtl is not None:
        rec.update(rtl_cycles=rtl["rtl_cycles"], rtl_model_cycles=rtl["model_cycles"],
                   rtl_ratio=rtl["ratio"], rtl_bit_exact=rtl["bit_exact"], rtl_ok=rtl["ok"],
                   rtl_why=rtl["why"])
    return rec


def rtl_sample(spec, points):
    """The points checked against the RTL: ``rtl_check.sample`` of the RTL-runnable points,
    drawn with the spec's seed (the same points on a resumed run)."""
    ok = [p for p in points if lanepoint.rtl_supports(p["gen"], p["run"])]
    n = min(spec.rtl_check["sample"], len(ok))
    return {p["id"] for p in random.Random(spec.seed).sample(ok, n)}


# -- the sweep ----------------------------------------------------------------------------------------
def sweep(spec, *, scheduler=None, workers=None, resume=False, progress=True, client=None):
    """Run ``spec`` (a :class:`.spec.Spec`) and write its outputs; returns the summary dict
    (``points``, ``ok``, ``failed``, ``pareto``, ``rtl``, ``seconds``, ``out``). Raises
    :class:`RTLMismatch` after writing everything if a sampled point's RTL disagrees with the
    models. ``client``: an open ``distributed.Client`` to use (else one is made and closed)."""
    start = time.monotonic()
    out = out_dir(spec)
    log = engine.Log(out / "points.jsonl", resume=resume)
    points = spec.points()
    todo = [p for p in points if p["id"] not in log.records]
    checked = rtl_sample(spec, points)
    made = client is None
    c = engine.client(scheduler, workers) if made else client
    try:
        bar = engine.Progress(len(points), f"sweep {spec.name}", progress,
                              initial=len(points) - len(todo))
        areas, futures = {}, {}
        for p in todo:
            g = digest(p["gen"])
            if g not in areas:
                areas[g] = c.submit(lanepoint.area, p["gen"], spec.area["ecp5"], pure=False,
                                    priority=PRIORITY["area"])
            fig = c.submit(_evaluate, p, spec.workload, pure=False,
                           priority=PRIORITY["evaluate"])
            rtl = (c.submit(_rtl, p, spec.workload, spec.rtl_check["cycle_ratio"], pure=False,
                            priority=PRIORITY["rtl"])
                   if p["id"] in checked else None)
            futures[p["id"]] = c.submit(_merge, p, areas[g], fig, rtl, pure=False,
                                        priority=PRIORITY["merge"])
        by_id = {p["id"]: p for p in todo}

        def done(pid, rec, err):
            if err is not None:
                rec = {**by_id[pid], "status": "failed", "error": err}
            log.append(rec)

        engine.stream(c, futures, done, bar)
        bar.close()
        workers_used = len(c.scheduler_info()["workers"])
    finally:
        if made:
            c.close()
    records = [log.records[p["id"]] for p in points if p["id"] in log.records]
    summary = write_outputs(spec, records, out, time.monotonic() - start, workers_used)
    bad = [r for r in records if r.get("rtl_ok") is False]
    if bad:
        raise RTLMismatch(f"model and RTL disagree on {len(bad)} of {len(summary['rtl'])} "
                          f"checked points: " + "; ".join(f"{r['id']}: {r['rtl_why']}"
                                                           for r in bad))
    return summary


def _columns(spec, records):
    gen = list(spec.generators[0])
    run = list(spec.runtime[0])
    return ["id", "status", "error", "seed", "unit", *gen, *run, *FIGURES, "pareto"], gen, run


def flat(record, gen, run):
    """A point record flattened for the CSV (parameters as columns)."""
    row = {k: v for k, v in record.items() if k not in ("gen", "run")}
    row.update({k: record["gen"][k] for k in gen})
    row.update({k: record["run"][k] for k in run})
    return row


def write_outputs(spec, records, out, seconds, workers):
    """Pareto flags, ``points.csv``, ``points.json``, ``summary.md`` and the plots."""
    from . import plots
    ok = [r for r in records if r["status"] == "ok"]
    flags = pareto_flags([[r[k] for k in OBJECTIVES] for r in ok]) if ok else []
    for r in records:
        r["pareto"] = False
    for r, f in zip(ok, flags):
        r["pareto"] = bool(f)
    cols, gen, run = _columns(spec, records)
    with (out / "points.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, cols, extrasaction="ignore")
        w.writeheader()
        for r in records:
            w.writerow(flat(r, gen, run))
    (out / "points.json").write_text(json.dumps(records, indent=1, default=str) + "\n")
    pngs = plots.sweep_plots(records, gen, run, out) if ok else []
    rtl = [r for r in records if "rtl_ok" in r]
    failed = [r for r in records if r["status"] == "failed"]
    varied = [k for k in gen if len({r["gen"][k] for r in records}) > 1] + \
             [k for k in run if len({str(r["run"][k]) for r in records}) > 1]
    front = sorted((r for r in ok if r["pareto"]), key=lambda r: r["cycles"])
    md = [f"# Sweep `{spec.name}`", "",
          f"Spec `{spec.path or '-'}`, unit `{spec.unit}`, {len(records)} points "
          f"({len(spec.generators)} generator x {len(spec.runtime)} run-time), seed {spec.seed}; "
          f"workload: first {spec.workload['seq_len']} tokens of "
          f"{', '.join(spec.workload['fixtures'])}, layers {spec.workload['layers']}. "
          f"{len(ok)} ok, {len(failed)} failed; wall time {seconds:.0f} s on {workers} "
          f"Dask worker(s). Produced by `attnforge sweep`.", "",
          "Area: Yosys generic gates (`synth/yosys.py`; transistors = logic + flip-flops, "
          "memories counted as bits). Cycles: `golden.lane.cycles`, mean over the heads. Head "
          "error: relative Frobenius error of the lane's FX16 output against dense float64, "
          "mean over the heads.", "",
          "## Pareto points (area, cycles, head error)", "",
          md_table(["id", *varied, "transistors", "cycles", "head error", "kept"],
                   [[r["id"], *[_get(r, k) for k in varied], r["transistors"], r["cycles"],
                     r["head_error"], r["kept_fraction"]] for r in front]), ""]
    md += ["## Model vs RTL (sampled points)", "",
           md_table(["id", *varied, "model cycles", "RTL cycles", "RTL / model",
                     "output bit-exact", "check"],
                    [[r["id"], *[_get(r, k) for k in varied], r["rtl_model_cycles"],
                      r["rtl_cycles"], r["rtl_ratio"], "yes" if r["rtl_bit_exact"] else "NO",
                      "ok" if r["rtl_ok"] else f"FAILED: {r['rtl_why']}"] for r in rtl])
           if rtl else "No point was checked (rtl_check.sample = 0 or no RTL-runnable point).",
           "", f"Band of RTL / model cycles: {spec.rtl_check['cycle_ratio']}.", ""]
    if failed:
        md += ["## Failed points", "",
               md_table(["id", *varied, "error"],
                        [[r["id"], *[_get(r, k) for k in varied], r["error"]]
                         for r in failed]), ""]
    md += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in pngs]
    (out / "summary.md").write_text("\n".join(md).rstrip() + "\n")
    return {"points": len(records), "ok": len(ok), "failed": len(failed),
            "pareto": [r["id"] for r in front], "rtl": [r["id"] for r in rtl],
            "seconds": seconds, "workers": workers, "out": str(out)}


def _get(rec, key):
    return rec["gen"][key] if key in rec["gen"] else rec["run"][key]
