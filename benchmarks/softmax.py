"""Softmax figures: error against float64 (and the worst rows a search finds), throughput
(elements/cycle, from the RTL on Verilator via cocotb), latency, area.

    python benchmarks/softmax.py      -> build/reports/softmax_bench.md / .json

The JSON keeps a top-level ``summary`` ``{"lanes": 4, "row_len": 256, "elements_per_cycle":
...}`` (P = 4 elements per beat, rows of 256; the key name ``lanes`` is fixed by issue 12) and
``before``: the figures of the previous design (two passes over a ping-pong buffer, radix-2
divider), measured on main at commit 5587e96 with its own benchmark.
"""

import numpy as np

from attnforge.golden.softmax import SoftmaxFormat, error_stats, peaked_row, random_row, worst_rows
from attnforge.reports import md_table, write_report
from attnforge.synth.yosys import synthesize
from attnforge.testbench.runner import measure

#: The previous design at main 5587e96 (`python benchmarks/softmax.py` there): Amaranth
#: simulation, 12 back-to-back rows, no gaps or stalls; Yosys at defaults (table_bits 6).
BEFORE = {
    "throughput": [  # lanes, max_len, row length, cycles/row, elements/cycle
        {"lanes": 4, "max_len": 64, "length": 8, "cycles_per_row": 26.2, "elements_per_cycle": 0.305},
        {"lanes": 4, "max_len": 64, "length": 16, "cycles_per_row": 30.4, "elements_per_cycle": 0.526},
        {"lanes": 4, "max_len": 64, "length": 64, "cycles_per_row": 55.4, "elements_per_cycle": 1.155},
        {"lanes": 4, "max_len": 256, "length": 256, "cycles_per_row": 157, "elements_per_cycle": 1.626},
    ],
    "elements_per_cycle_L4": 0.17,     # issue 12 (row of one beat: 4 / (2 + 19 + 3))
    "area_defaults": {"cells": 45779, "ffs": 3942, "transistors": 252742, "depth": 184},
    "area_max_len_256": {"cells": 92563, "ffs": 14708, "transistors": 650812, "depth": 187},
    "max_err_lsb": 0.92,               # worst 3-element row found by a search (3.59e-3)
}

RATE_PARAMS = {"per_beat": 4, "max_len": 1024}


def error_table():
    rows_out, data = [], []
    for table_bits in (6, 7, 8):
        for out_frac in (8, 12):
            fmt = SoftmaxFormat(table_bits=table_bits, out_frac=out_frac, max_len=256)
            for kind, make in (("random", random_row), ("peaked", peaked_row)):
                for length in (3, 16, 64, 256):
                    rng = np.random.default_rng(length)
                    rows = [make(rng, length, fmt) for _ in range(300)]
                    st = error_stats(rows, fmt)
                    data.append({"table_bits": table_bits, "out_frac": out_frac, "kind": kind,
                                 "length": length, **st})
                    rows_out.append([table_bits, out_frac, kind, length,
                                     f"{st['max_abs']:.2e}", f"{st['mean_abs']:.2e}",
                                     f"{st['max_lsb']:.3f}"])
    return md_table(["table_bits", "out_frac", "rows", "length", "max abs err",
                     "mean abs err", "max err (LSB)"], rows_out), data


def worst_table():
    out, data = [], []
    for table_bits in (6, 7):
        fmt = SoftmaxFormat(table_bits=table_bits)
        found = worst_rows(np.random.default_rng(2026), fmt, lengths=(2, 3, 4, 5, 8))
        for err, row in found[:3]:
            data.append({"table_bits": table_bits, "row": row, "max_abs": err,
                         "max_lsb": err * (1 << fmt.out_frac)})
            out.append([table_bits, f"`{row}`", f"{err:.2e}", f"{err * (1 << fmt.out_frac):.3f}"])
    return md_table(["table_bits", "row (input LSBs)", "max abs err", "LSB"], out), data


def throughput_table():
    fig = measure("softmax", RATE_PARAMS, "throughput")
    lat = measure("softmax", RATE_PARAMS, "latency")
    out, data = [], []
    for length, r in sorted(fig["rows"].items(), key=lambda kv: int(kv[0])):
        data.append({"per_beat": fig["per_beat"], "max_len": fig["max_len"],
                     "length": int(length), **r})
        out.append([fig["per_beat"], int(length), r["rows"], r["beats"], r["cycles"],
                    f"{r['elements_per_cycle']:.3f}"])
    table = md_table(["per_beat", "row length", "rows", "beats", "cycles (output, first to "
                      "last beat)", "elements/cycle"], out)
    return table, data, lat["latency"]


def area_table():
    out, data = [], []
    for params in ({}, {"max_len": 256}):
        r = synthesize("softmax", params)
        data.append(r)
        out.append([", ".join(f"{k}={v}" for k, v in params.items()) or "defaults",
                    r["cells"], r["ffs"], r["transistors"], r["depth"]])
    return md_table(["params", "cells", "FFs", "transistors", "depth"], out), data


def main():
    err_md, err = error_table()
    worst_md, worst = worst_table()
    thr_md, thr, latency = throughput_table()
    area_md, area = area_table()
    rate256 = next(r["elements_per_cycle"] for r in thr if r["length"] == 256)
    summary = {"lanes": 4, "row_len": 256, "elements_per_cycle": rate256}
    md = f"""# Softmax benchmark

Command: `python benchmarks/softmax.py`. Defaults: per_beat 4, max_len 64, input FX16 with 8
fraction bits, output 8 fraction bits, table_bits 7, recip_steps 4.

Summary (RTL, P = 4, rows of 256): **{rate256:.3f} elements/cycle** (before: 1.626).

## Error against float64 (golden model, 300 rows per line)

Target: max |p - p_float64| <= 2^-8 = 3.9e-3 at out_frac = 8.

{err_md}

## Worst rows found (random short / near-tie rows + hill climbing, golden model)

{worst_md}

## Throughput (cocotb on Verilator, {RATE_PARAMS}, back-to-back dense rows, no gaps or stalls)

{thr_md}

Latency (last input beat accepted -> first output beat valid, measured): {latency} cycles.

## Area (Yosys, generic CMOS gates)

{area_md}
"""
    path = write_report("softmax_bench", md, {
        "summary": summary, "error": err, "worst_rows": worst, "throughput": thr,
        "latency": latency, "area": area, "before": BEFORE})
    print(md)
    print(f"written {path}")


if __name__ == "__main__":
    main()
