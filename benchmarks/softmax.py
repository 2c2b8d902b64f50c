"""Softmax figures: error against float64, throughput (elements/cycle), area.

    python benchmarks/softmax.py      -> build/reports/softmax_bench.md / .json
"""

import numpy as np
from amaranth.sim import Simulator

from attnforge.golden.softmax import SoftmaxFormat, error_stats, peaked_row, random_row, split_beats
from attnforge.rtl.softmax import Softmax
from attnforge.reports import md_table, write_report
from attnforge.synth.yosys import synthesize


def error_table():
    rows_out, data = [], []
    for table_bits in (5, 6, 8):
        for out_frac in (8, 12):
            fmt = SoftmaxFormat(table_bits=table_bits, out_frac=out_frac, max_len=256)
            for kind, make in (("random", random_row), ("peaked", peaked_row)):
                for length in (4, 16, 64, 256):
                    rng = np.random.default_rng(length)
                    rows = [make(rng, length, fmt) for _ in range(300)]
                    st = error_stats(rows, fmt)
                    rec = {"table_bits": table_bits, "out_frac": out_frac, "kind": kind,
                           "length": length, **st}
                    data.append(rec)
                    rows_out.append([table_bits, out_frac, kind, length,
                                     f"{st['max_abs']:.2e}", f"{st['mean_abs']:.2e}",
                                     f"{st['max_lsb']:.3f}"])
    return md_table(["table_bits", "out_frac", "rows", "length", "max abs err",
                     "mean abs err", "max err (LSB)"], rows_out), data


def measure_cycles(dut, rows):
    """Cycles from the first input beat to the last output beat, no gaps, no stalls."""
    beats = [b for r in rows for b in r]
    n_out = len(beats)
    state = {"cycles": 0, "seen": 0}

    async def source(ctx):
        for b in beats:
            ctx.set(dut.i.payload, b)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        ctx.set(dut.o.ready, 1)
        while state["seen"] < n_out:
            _, _, valid = await ctx.tick().sample(dut.o.valid)
            state["cycles"] += 1
            state["seen"] += int(valid)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()
    return state["cycles"]


def throughput_table():
    out, data = [], []
    rng = np.random.default_rng(0)
    for lanes, max_len in ((1, 64), (4, 64), (8, 64), (4, 256)):
        dut = Softmax(lanes=lanes, max_len=max_len)
        for length in sorted({8, max_len // 4, max_len}):
            n_rows = 12
            rows = [split_beats(random_row(rng, length, dut.fmt), np.arange(length), lanes)
                    for _ in range(n_rows)]
            cycles = measure_cycles(dut, rows)
            rate = n_rows * length / cycles
            data.append({"lanes": lanes, "max_len": max_len, "length": length,
                         "cycles": cycles, "rows": n_rows, "elements_per_cycle": rate,
                         "bound_cycles_per_row": dut.row_cycles(length)})
            out.append([lanes, max_len, length, round(cycles / n_rows, 1),
                        dut.row_cycles(length), f"{rate:.3f}"])
    return md_table(["lanes", "max_len", "row length", "cycles/row (measured)",
                     "row_cycles bound", "elements/cycle"], out), data


def area_table():
    out, data = [], []
    for params in ({}, {"lanes": 1}, {"lanes": 8}, {"max_len": 256}, {"table_bits": 8}):
        r = synthesize("softmax", params)
        data.append(r)
        out.append([", ".join(f"{k}={v}" for k, v in params.items()) or "defaults",
                    r["cells"], r["ffs"], r["transistors"], r["depth"]])
    return md_table(["params", "cells", "FFs", "transistors", "depth"], out), data


def main():
    err_md, err = error_table()
    thr_md, thr = throughput_table()
    area_md, area = area_table()
    md = f"""# Softmax benchmark

Command: `python benchmarks/softmax.py`. Defaults: lanes 4, max_len 64, input FX16 with 8
fraction bits, output 8 fraction bits, table_bits 6.

## Error against float64 (golden model, 300 rows per line)

Target: max |p - p_float64| <= 2^-8 = 3.9e-3 at out_frac = 8.

{err_md}

## Throughput (Amaranth simulation, 12 back-to-back rows, no gaps or stalls)

{thr_md}

## Area (Yosys, generic CMOS gates)

{area_md}
"""
    path = write_report("softmax_bench", md, {"error": err, "throughput": thr, "area": area})
    print(md)
    print(f"written {path}")


if __name__ == "__main__":
    main()
