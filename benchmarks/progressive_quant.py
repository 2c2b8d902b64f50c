"""Progressive quantization figures (golden model) and bitwidth-converter area.

    python benchmarks/progressive_quant.py   -> build/reports/progressive_quant_bench.md / .json

Fraction of queries that needed the LSB plane, memory bytes with and without progressive
quantization, and the accuracy cost (max |p - p_full| in output LSBs), at several thresholds on
random and peaked score distributions, for 4+4 and 6+4 key planes.
"""

import sys

import numpy as np

from attnforge.golden.progressive_quant import PQConfig, run_queries
from attnforge.golden.softmax import SoftmaxFormat
from attnforge.rtl.progressive_quant import BitwidthConverter
from attnforge.synth.report import md_table, write_report
from attnforge.synth.yosys import synthesize

N_KEYS, DIM, N_QUERIES = 64, 16, 200


def workload(rng, kind, key_bits):
    """Keys and queries; 'peaked' plants each query near a few keys (real-looking attention)."""
    hi = (1 << (key_bits - 1)) - 1
    keys = rng.integers(-hi, hi + 1, (N_KEYS, DIM))
    if kind == "random":
        queries = rng.integers(-127, 128, (N_QUERIES, DIM))
    else:
        picks = keys[rng.integers(0, N_KEYS, N_QUERIES)]
        scale = 127 / hi
        queries = np.clip(np.rint(picks * scale + rng.normal(0, 20, (N_QUERIES, DIM))),
                          -127, 127).astype(np.int64)
    return keys, queries


def pq_table():
    out, data = [], []
    for msb, lsb in ((4, 4), (6, 4)):
        for kind in ("random", "peaked"):
            rng = np.random.default_rng(msb * 10 + (kind == "peaked"))
            keys, queries = workload(rng, kind, msb + lsb)
            # Calibration (what a quantizer does): score_shift puts the score standard
            # deviation at about 2.5 in softmax units (8 fraction bits).
            std = float(np.std(queries @ keys.T))
            shift = max(0, int(np.rint(np.log2(std / (2.5 * 256)))))
            cfg = PQConfig(dim=DIM, msb_bits=msb, lsb_bits=lsb, score_shift=shift,
                           softmax=SoftmaxFormat(max_len=N_KEYS))
            for thr in (0, 32, 64, 128, 192, 257):
                r = run_queries(queries, keys, thr, cfg)
                data.append({"msb": msb, "lsb": lsb, "kind": kind, "score_shift": shift,
                             "threshold": thr, **r})
                out.append([f"{msb}+{lsb}", kind, shift, f"{thr}/256", f"{r['fetched_fraction']:.2f}",
                            r["bytes_pq"], r["bytes_full"], f"{r['saved_fraction']:.1%}",
                            f"{r['max_err_lsb_vs_full']:.0f}"])
    return md_table(["planes", "scores", "score_shift", "threshold", "LSB fetched", "bytes (PQ)",
                     "bytes (full)", "saved", "max err vs full (LSB)"], out), data


def area_table():
    out, data = [], []
    for params in ({"word_bits": 64, "lanes": 8}, {"word_bits": 64, "lanes": 16},
                   {"word_bits": 32, "lanes": 8}):
        comp = BitwidthConverter(**params)
        name = "bwconv_" + "_".join(f"{v}" for v in params.values())
        r = synthesize("bitwidth_converter", params, component=comp, name=name)
        data.append(r)
        out.append([", ".join(f"{k}={v}" for k, v in params.items()), "2,4,6,8", r["cells"],
                    r["ffs"], r["transistors"], r["depth"]])
    return md_table(["params", "widths", "cells", "FFs", "transistors", "depth"], out), data


def main():
    pq_md, pq = pq_table()
    area_md, area = area_table() if "--no-synth" not in sys.argv else ("(skipped)", [])
    md = f"""# Progressive quantization benchmark

Command: `python benchmarks/progressive_quant.py`. {N_QUERIES} queries x {N_KEYS} keys of
dimension {DIM}, 64-bit memory words, softmax defaults (8 output fraction bits). Figures from the
golden model (the top-level RTL is not built yet). Threshold t: the LSB plane is fetched when
max probability < t/256; 257/256 always fetches (= no progressive quantization).

{pq_md}

## Bitwidth converter area (Yosys, generic CMOS gates)

{area_md}
"""
    path = write_report("progressive_quant_bench", md, {"pq": pq, "converter_area": area})
    print(md)
    print(f"written {path}")


if __name__ == "__main__":
    main()
