"""Progressive quantization figures: traffic (golden model), RTL cycles per query, area.

    python benchmarks/progressive_quant.py              -> build/reports/progressive_quant_bench.md / .json
    python benchmarks/progressive_quant.py --no-synth   (skip the Yosys runs)

* Fraction of queries that needed the LSB plane, memory bytes with and without progressive
  quantization, and the accuracy cost (max |p - p_full| in output LSBs), at several thresholds on
  random and peaked score distributions, for 4+4 and 6+4 key planes (golden model).
* The RTL unit in the Amaranth simulator: cycles per query (command handshake to last output
  beat) with and without the LSB fetch, against n and the memory latency; and the traffic
  workload above replayed through the RTL (fetched fraction, bytes, cycles per query, bit-exact
  check against the golden model).
* Area (Yosys, generic CMOS) of the unit, of its Softmax and of its bitwidth converter, and of
  stand-alone converters.
"""

import sys

import numpy as np
from amaranth.sim import Simulator

from attnforge.golden.progressive_quant import (PQConfig, pack_dense, progressive_query,
                                                run_queries, split_planes)
from attnforge.golden.softmax import SoftmaxFormat
from attnforge.rtl.progressive_quant import BitwidthConverter, ProgressiveQuant
from attnforge.reports import md_table, write_report
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


def calibrate(queries, keys):
    """score_shift putting the score standard deviation at about 2.5 in softmax units (8
    fraction bits) -- what a quantizer's calibration does."""
    std = float(np.std(queries @ keys.T))
    return max(0, int(np.rint(np.log2(std / (2.5 * 256)))))


def simulate(dut, queries, latency):
    """Run ``queries`` ((q, keys, threshold)) one at a time through ``dut`` in the Amaranth
    simulator: no gaps, no stalls, memory answering ``latency`` cycles after a request at one
    word per cycle. Returns per query ``(probs, fetched, bytes, cycles)`` where ``cycles`` runs
    from the command handshake to the last output beat's handshake (both included)."""
    cfg = dut.config
    mem, cmds, addr = {}, [], 0
    for q, keys, thr in queries:
        msb, lsb = split_planes(keys, cfg.msb_bits, cfg.lsb_bits)
        bases = []
        for vals, p in ((msb, cfg.msb_bits), (lsb, cfg.lsb_bits)):
            bases.append(addr)
            for w in pack_dense(vals.ravel(), p, cfg.word_bits):
                mem[addr] = w
                addr += 1
        cmds.append({"q": [int(x) for x in q], "n": len(keys), "threshold": thr,
                     "msb_addr": bases[0], "lsb_addr": bases[1]})
    results = []

    async def bench(ctx):
        cycle, words = 0, []
        for c in cmds:
            ctx.set(dut.cmd.payload, c)
            ctx.set(dut.cmd.valid, 1)
            ctx.set(dut.o.ready, 1)
            ctx.set(dut.req.ready, 1)
            probs, nbytes, fetched, t0 = [], 0, 0, None
            while True:
                present = bool(words) and words[0][0] <= cycle
                ctx.set(dut.resp.valid, present)
                if present:
                    ctx.set(dut.resp.payload.data, words[0][1])
                _, _, cv, rv, rp, sr, ov, op = await ctx.tick().sample(
                    dut.cmd.ready, dut.req.valid, dut.req.payload, dut.resp.ready,
                    dut.o.valid, dut.o.payload)
                cycle += 1
                if cv and t0 is None:
                    t0 = cycle
                    ctx.set(dut.cmd.valid, 0)
                if rv:
                    nbytes += int(rp.count) * cfg.word_bits // 8
                    words += [(cycle + latency, mem[int(rp.addr) + i])
                              for i in range(int(rp.count))]
                if present and sr:
                    words.pop(0)
                if ov:
                    probs += [int(x) for x in op.data][:int(op.count)]
                    fetched = int(op.fetched)
                    if op.last:
                        results.append((probs, fetched, nbytes, cycle - t0 + 1))
                        break

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return results


RTL_UNITS = {"4+4": {}, "6+4": {"msb_bits": 6, "lsb_bits": 4}}

#: Cycles per query of the previous design (main 5587e96: two-pass softmax with a radix-2
#: divider, table_bits 6), same workload: (planes, mem latency, n) -> (MSB only, +LSB).
BEFORE_CYCLES = {("4+4", 0, 1): (30, 57), ("4+4", 0, 4): (40, 75), ("4+4", 0, 8): (56, 103),
                 ("4+4", 0, 16): (88, 159), ("4+4", 10, 16): (98, 179),
                 ("6+4", 0, 16): (92, 156), ("6+4", 10, 16): (102, 176)}


def cycles_table():
    """Cycles per query of the RTL (defaults: dim 8, 4 MACs, 64-bit words, softmax per_beat 2,
    max_len 16) against n, the LSB fetch and the memory latency."""
    out, data = [], []
    rng = np.random.default_rng(5)
    for planes, params in RTL_UNITS.items():
        for latency in (0, 10):
            for n in (1, 4, 8, 16):
                row = []
                for thr in (0, 511):                       # never / always fetch
                    dut = ProgressiveQuant(**params)
                    cfg = dut.config
                    hi = (1 << (cfg.key_bits - 1)) - 1
                    keys = rng.integers(-hi, hi + 1, (n, cfg.dim))
                    q = rng.integers(-127, 128, cfg.dim)
                    ((probs, fetched, nbytes, cycles),) = simulate(dut, [(q, keys, thr)], latency)
                    gp, gf, gb = progressive_query(q, keys, thr, cfg)
                    assert (probs, fetched, nbytes) == (list(gp), int(gf), gb), "RTL != golden"
                    row.append(cycles)
                    data.append({"planes": planes, "latency": latency, "n": n,
                                 "fetched": fetched, "cycles": cycles,
                                 "bound": dut.query_cycles(n, bool(fetched)), "bytes": nbytes})
                before = BEFORE_CYCLES.get((planes, latency, n))
                data[-1]["before"] = before
                out.append([planes, latency, n, row[0], row[1], row[1] - row[0],
                            "/".join(map(str, before)) if before else "-",
                            f"{n / row[0]:.3f}", f"{n / row[1]:.3f}"])
    return md_table(["planes", "mem latency", "n", "cycles (MSB only)", "cycles (+LSB)",
                     "LSB fetch costs", "before (MSB only/+LSB)", "keys/cycle (MSB only)",
                     "keys/cycle (+LSB)"], out), data


def rtl_traffic_table():
    """The traffic workload replayed through the RTL (dim 16, 8 MACs, 64 keys, 4 lanes)."""
    out, data = [], []
    n_queries = 40
    for msb, lsb in ((4, 4), (6, 4)):
        for kind in ("random", "peaked"):
            rng = np.random.default_rng(msb * 10 + (kind == "peaked"))
            keys, queries = workload(rng, kind, msb + lsb)
            queries = queries[:n_queries]
            shift = calibrate(queries, keys)
            params = {"dim": DIM, "macs": 8, "msb_bits": msb, "lsb_bits": lsb,
                      "score_shift": shift, "per_beat": 4, "max_len": N_KEYS}
            thr = 128
            dut = ProgressiveQuant(**params)
            cfg = dut.config
            res = simulate(dut, [(q, keys, thr) for q in queries], 4)
            golden = [progressive_query(q, keys, thr, cfg) for q in queries]
            exact = all((p, f, b) == (list(gp), int(gf), gb)
                        for (p, f, b, _), (gp, gf, gb) in zip(res, golden))
            fetched = sum(r[1] for r in res) / n_queries
            nbytes = sum(r[2] for r in res)
            full = n_queries * (cfg.plane_bytes(N_KEYS, msb) + cfg.plane_bytes(N_KEYS, lsb))
            cycles = [r[3] for r in res]
            data.append({"msb": msb, "lsb": lsb, "kind": kind, "params": params,
                         "threshold": thr, "queries": n_queries, "fetched_fraction": fetched,
                         "bytes_pq": nbytes, "bytes_full": full, "bit_exact": exact,
                         "mean_cycles": float(np.mean(cycles)), "max_cycles": max(cycles)})
            out.append([f"{msb}+{lsb}", kind, shift, f"{fetched:.2f}", nbytes, full,
                        f"{1 - nbytes / full:.1%}", f"{np.mean(cycles):.1f}", max(cycles),
                        "yes" if exact else "NO"])
    return md_table(["planes", "scores", "score_shift", "LSB fetched", "bytes (RTL)",
                     "bytes (full)", "saved", "cycles/query (mean)", "max", "bit-exact"], out), data


def unit_area_table():
    """Area of the unit at its defaults (and 6+4 planes) with its two big parts alone."""
    out, data = [], []
    for planes, params in RTL_UNITS.items():
        dut = ProgressiveQuant(**params)
        dut._MustUse__silence = True        # only its properties are read here
        parts = [("unit", "progressive_quant", params, None),
                 ("its softmax", "softmax", {"per_beat": dut.per_beat, "max_len": dut.max_len,
                                             "table_bits": dut.fmt.table_bits,
                                             "index_bits": 0}, None)]
        widths = (dut.msb_bits, dut.lsb_bits) if dut.msb_bits != dut.lsb_bits else (dut.msb_bits,)
        conv = {"word_bits": dut.word_bits, "per_beat": dut.macs, "widths": widths}
        parts.append(("its converter", "bitwidth_converter", conv,
                      BitwidthConverter(**conv)))
        for what, unit, p, comp in parts:
            name = None if comp is None else "bwconv_" + "_".join(
                str(v) for v in (conv["word_bits"], conv["per_beat"], *widths))
            r = synthesize(unit, p, component=comp, name=name)
            data.append({"planes": planes, "part": what, **r})
            out.append([planes, what, ", ".join(f"{k}={v}" for k, v in p.items()) or "defaults",
                        r["cells"], r["ffs"], r["transistors"], r["depth"]])
    return md_table(["planes", "part", "params", "cells", "FFs", "transistors", "depth"],
                    out), data


def pq_table():
    out, data = [], []
    for msb, lsb in ((4, 4), (6, 4)):
        for kind in ("random", "peaked"):
            rng = np.random.default_rng(msb * 10 + (kind == "peaked"))
            keys, queries = workload(rng, kind, msb + lsb)
            # Calibration (what a quantizer does): score_shift puts the score standard
            # deviation at about 2.5 in softmax units (8 fraction bits).
            shift = calibrate(queries, keys)
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
    for params in ({"word_bits": 64, "per_beat": 8}, {"word_bits": 64, "per_beat": 16},
                   {"word_bits": 32, "per_beat": 8}):
        comp = BitwidthConverter(**params)
        name = "bwconv_" + "_".join(f"{v}" for v in params.values())
        r = synthesize("bitwidth_converter", params, component=comp, name=name)
        data.append(r)
        out.append([", ".join(f"{k}={v}" for k, v in params.items()), "2,4,6,8", r["cells"],
                    r["ffs"], r["transistors"], r["depth"]])
    return md_table(["params", "widths", "cells", "FFs", "transistors", "depth"], out), data


def main():
    synth = "--no-synth" not in sys.argv
    pq_md, pq = pq_table()
    cyc_md, cyc = cycles_table()
    traffic_md, traffic = rtl_traffic_table()
    unit_md, unit_area = unit_area_table() if synth else ("(skipped)", [])
    area_md, area = area_table() if synth else ("(skipped)", [])
    md = f"""# Progressive quantization benchmark

Command: `python benchmarks/progressive_quant.py`.

## Traffic and accuracy (golden model)

{N_QUERIES} queries x {N_KEYS} keys of dimension {DIM}, 64-bit memory words, softmax defaults
(8 output fraction bits). Threshold t: the LSB plane is fetched when max probability < t/256;
257/256 always fetches (= no progressive quantization).

{pq_md}

## RTL: cycles per query (Amaranth simulator)

`ProgressiveQuant` at its defaults (dim 8, 4 MACs, 64-bit words, softmax per_beat 2, max_len 16)
and with 6+4 planes; one query at a time, no gaps or stalls, memory answering `latency` cycles
after a request at one word per cycle; cycles from the command handshake to the last output
beat, both included. Every answer checked against the golden model.

{cyc_md}

## RTL: the traffic workload replayed

The first 40 queries of each workload above through `ProgressiveQuant(dim=16, macs=8,
per_beat=4, max_len=64, score_shift=calibrated)` at threshold 128/256, memory latency 4 cycles;
bytes counted from the unit's memory requests.

{traffic_md}

## Area (Yosys, generic CMOS gates)

The unit at its defaults (4+4) and with 6+4 planes, and its Softmax and bitwidth converter
synthesized alone with the parameters the unit gives them. Memories are flip-flops here (no
RAM macros in the generic flow).

{unit_md}

Stand-alone bitwidth converters (widths 2, 4, 6, 8 selectable at run time):

{area_md}
"""
    path = write_report("progressive_quant_bench", md,
                        {"pq": pq, "rtl_cycles": cyc, "rtl_traffic": traffic,
                         "unit_area": unit_area, "converter_area": area})
    print(md)
    print(f"written {path}")


if __name__ == "__main__":
    main()
