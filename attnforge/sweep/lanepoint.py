"""One design point of the lane: area (Yosys), cycles (the lane's cycle model), accuracy (the
lane's golden model on real fixture heads), and the model-vs-RTL check.

This is the only module of the sweep that knows the lane, and it uses only the lane's public
entry points:

* the generator: the ``lane`` unit (``rtl/lane.py``) from the registry, :func:`lane_record`;
* :func:`lane_params`: generator parameters -> :class:`attnforge.golden.lane.LaneParams` of
  the generated hardware (``schedule="rtl"``: the cycle model equals the RTL's status cycles;
  ``"pipelined"``: the design's tile schedule, docs/lane.md section 3, what the search uses);
* the golden model: ``run_lane``, ``cycles``, ``auto_config``, ``int_projection``;
* the RTL run: :func:`simulate_rtl` (the lane in the Amaranth simulator).
"""

import json

import numpy as np

from ..golden.attention import HeadConfig, attend_float, to_fx
from ..golden.lane import (LaneConfig, auto_config, block_norms, cycles, int_projection,
                           run_lane)
from ..paths import BUILD, digest

__all__ = ["lane_record", "lane_params", "build_lane", "area", "evaluate", "rtl_supports",
           "model_cycles_for_rtl", "simulate_rtl", "rtl_check", "workload_heads", "head_configs", "AREA_CACHE"]

#: Area results by Verilog digest, shared by every sweep (a design is synthesized once).
AREA_CACHE = BUILD / "sweeps" / "_area"


def lane_record():
    """The lane's unit record (``rtl/lane.py``): parameter names and legal domains."""
    from ..rtl import unit
    return unit("lane")


def lane_params(gen, schedule="rtl"):
    """:class:`LaneParams` of the lane at generator parameters ``gen`` (the golden twin of the
    generated hardware, ``testbench.lane.lane_params``). ``schedule="rtl"``: the cycle model is
    the RTL's status cycle count on every point the RTL runs; ``"pipelined"``: the design's
    schedule (double-buffered tiles), not built yet."""
    from dataclasses import replace
    from types import SimpleNamespace
    from ..testbench.lane import lane_params as of_lane
    full = lane_record().validate(**gen)
    return replace(of_lane(SimpleNamespace(**full)), schedule=schedule)


def build_lane(gen):
    """The lane RTL (an Amaranth component) at generator parameters ``gen``."""
    return lane_record().build(**gen)


# -- area --------------------------------------------------------------------------------------------
def area(gen, ecp5=False):
    """Yosys figures of the lane at ``gen`` (``synth.yosys.synthesize``; ECP5 with ``ecp5``),
    cached in :data:`AREA_CACHE` by the digest of the emitted Verilog: a design is synthesized
    once across sweeps. Adds ``verilog_digest`` and ``cached``."""
    from ..rtl import verilog
    from ..synth.yosys import synthesize
    text = verilog(build_lane(gen), name="lane")
    key = digest(text, ecp5)
    path = AREA_CACHE / f"{key}.json"
    if path.exists():
        return {**json.loads(path.read_text()), "cached": True}
    fig = synthesize("lane", gen, component=build_lane(gen), name="lane")
    out = {k: fig[k] for k in ("cells", "transistors", "transistors_with_sram", "ffs",
                               "memory_bits", "depth")}
    if ecp5:
        from ..synth.nextpnr import implement
        e = implement("lane", gen, component=build_lane(gen), name="lane")
        out.update(ecp5_luts=e["luts"], ecp5_ffs=e["ffs"], ecp5_fmax=e["fmax"],
                   ecp5_error=e.get("error"))
    out["verilog_digest"] = key
    AREA_CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out))
    tmp.replace(path)
    return {**out, "cached": False}


# -- the workload ------------------------------------------------------------------------------------
def workload_heads(workload):
    """``[(label, layer, head, q, k, v)]``: the first ``seq_len`` tokens of every selected
    fixture head (float64)."""
    from ..golden.attention_eval import fixture_heads
    t = workload["seq_len"]
    out = []
    for name, layer, h, q, k, v in fixture_heads(tuple(workload["fixtures"])):
        if layer not in workload["layers"] or (workload["heads"] and h not in workload["heads"]):
            continue
        if len(q) < t:
            raise ValueError(f"workload.seq_len {t} is longer than fixture {name} ({len(q)})")
        out.append((f"{name}/L{layer}H{h}", layer, h, q[:t], k[:t], v[:t]))
    return out


def head_configs(params, run, heads):
    """Per head ``(cfg, qi, ki, vi, pq, pk, ref)``: the lane configuration of the run-time
    knobs ``run`` (block granularity, top-k ``keep_count`` blocks per block row, estimate bits,
    sigma; shifts fitted by ``auto_config``; ``int8_bound`` = the ``int8_quantile`` of the
    head's kept-block norms), the FX16 operands, the calibrated INT8 projections and the dense
    float64 reference output."""
    from ..golden.attention_eval import fixture_projections
    out = []
    for _, layer, h, q, k, v in heads:
        t, d = q.shape
        qi, ki, vi = to_fx(q, k, v, params.frac_bits)
        ref = attend_float(q, k, v)
        proj = fixture_projections(run["sigma"])[(layer, h)]
        pq, pk = int_projection(d, proj.dim, proj=proj)
        if run["sparsity"] == "dense":
            cfg = LaneConfig(t=t, mode="dense", m=proj.dim)
        else:
            head = HeadConfig(algorithm="bssa", block=run["block"], sparsity=run["sparsity"],
                              estimate_bits=run["est_bits"], sigma=run["sigma"])
            cfg = auto_config(params, LaneConfig.from_head(head, t, d=d), qi, ki, pq, pk)
            if run["int8_quantile"] != "off":
                plan = run_lane(params, cfg, qi, ki, vi, pq, pk, plan_only=True)
                b = run["block"]
                kept = plan.mask[::b, ::b]
                norms = block_norms(plan.est, b)[kept]
                cfg = cfg.replace(int8_bound=int(np.quantile(norms, run["int8_quantile"])))
        out.append((cfg, qi, ki, vi, pq, pk, ref))
    return out


def evaluate(gen, run, heads, schedule="rtl"):
    """Cycles and accuracy of one point: means over ``heads`` of the cycle model's total, the
    kept fraction, the relative Frobenius error of the lane's FX16 output against dense float64
    (``head_error``), and the fraction of kept blocks at INT8; cycles of the ``schedule``
    (:func:`lane_params`). Raises ``ValueError`` for an illegal combination (the lane's own
    ``LaneConfig.error``)."""
    from ..golden.numbers import fx_to_float
    params = lane_params(gen, schedule)
    cyc, kept, err, int8 = [], [], [], []
    for cfg, qi, ki, vi, pq, pk, ref in head_configs(params, run, heads):
        r = run_lane(params, cfg, qi, ki, vi, pq, pk)
        c = cycles(params, cfg, r)
        cyc.append(c["total"])
        kept.append(c["kept_fraction"])
        o = fx_to_float(r.out, params.frac_bits)
        err.append(float(np.linalg.norm(o - ref) / np.linalg.norm(ref)))
        int8.append(float(r.int8_blocks.mean()) if r.int8_blocks is not None else 0.0)
    return {"cycles": float(np.mean(cyc)), "cycles_max": int(np.max(cyc)),
            "kept_fraction": float(np.mean(kept)), "head_error": float(np.mean(err)),
            "head_error_max": float(np.max(err)), "int8_fraction": float(np.mean(int8)),
            "heads": len(cyc)}


# -- model vs RTL --------------------------------------------------------------------------------------
def rtl_supports(gen, run):
    """True when the lane RTL accepts this point's configuration (``golden.lane.rtl_error``
    decides per head; this is the part known before the heads: dense, or top-k blocks of the
    query tile's size, HB-BSSA INT8 blocks included)."""
    return run["sparsity"] == "dense" or run["block"] == gen["block"]


def model_cycles_for_rtl(c):
    """The cycle model's figure the RTL must equal (``c`` = ``golden.lane.cycles`` at
    :func:`lane_params`, whose ``schedule="rtl"`` models the top level as built)."""
    return c["total"]


def simulate_rtl(gen, params, cfg, qi, ki, vi, pq, pk):
    """``(out, cycles)`` of one head on the lane RTL at ``gen``: ``rtl/lane.py`` in the
    Amaranth simulator (``testbench.lane.simulate_lane``); ``out`` is rebuilt from the ``o``
    beats (``index`` = column), ``cycles`` is the status beat's count."""
    from ..testbench.lane import simulate_lane
    (beats, status, _), = simulate_lane(build_lane(gen), [(cfg, qi, ki, vi, pq, pk)])
    if status["error"]:
        raise ValueError(f"the lane RTL rejected the configuration of {cfg}")
    out = np.zeros((cfg.t, params.d), dtype=np.int64)
    row = 0
    for beat in beats:
        for j in range(beat["count"]):
            out[row, beat["index"][j]] = beat["data"][j]
        row += beat["last"]
    return out, status["cycles"]


def rtl_check(gen, run, heads, band):
    """Run the first head of ``heads`` on the RTL and compare with the models: the output must
    equal ``run_lane``'s bit for bit and RTL cycles / model cycles
    (:func:`model_cycles_for_rtl`) must lie in ``band``
    (``[lo, hi]``). Returns ``{"rtl_cycles", "model_cycles", "ratio", "bit_exact", "ok",
    "why"}``."""
    params = lane_params(gen)
    cfg, qi, ki, vi, pq, pk, _ = head_configs(params, run, heads[:1])[0]
    ref = run_lane(params, cfg, qi, ki, vi, pq, pk)
    model = model_cycles_for_rtl(cycles(params, cfg, ref))
    out, rtl = simulate_rtl(gen, params, cfg, qi, ki, vi, pq, pk)
    exact = bool(np.array_equal(out, ref.out))
    ratio = rtl / model
    why = []
    if not exact:
        why.append(f"output differs from run_lane in {int((out != ref.out).sum())} values")
    if not band[0] <= ratio <= band[1]:
        why.append(f"RTL {rtl} cycles vs model {model}: ratio {ratio:.3f} outside "
                   f"[{band[0]}, {band[1]}]")
    return {"rtl_cycles": int(rtl), "model_cycles": int(model), "ratio": ratio,
            "bit_exact": exact, "ok": not why, "why": "; ".join(why)}
