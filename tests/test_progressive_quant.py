"""Progressive quantization: golden-model tests and Amaranth-simulator tests of the bitwidth
converter (every width, values straddling word boundaries, gaps and stalls)."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from attnforge.golden.progressive_quant import (PQConfig, convert, pack_dense, progressive_query,
                                                run_queries, split_planes, unpack_dense,
                                                words_for)
from attnforge.golden.softmax import softmax_fx
from attnforge.rtl.progressive_quant import BitwidthConverter

CFG = PQConfig()


# ------------------------------------------------------------------ golden model

def test_pack_hand_worked_straddle():
    # 6-bit values in 16-bit words: value 2 occupies bits 12..17 -> straddles words 0 and 1.
    vals = [0b000001, 0b000010, 0b110011, 0b000100]
    words = pack_dense(vals, 6, 16)
    assert words == [0b0011_000010_000001, 0b000100_11]
    assert unpack_dense(words, 6, 16, 4) == vals


@pytest.mark.parametrize("p", [1, 2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("w", [8, 16, 64])
def test_pack_roundtrip(p, w):
    rng = np.random.default_rng(p * w)
    vals = list(rng.integers(0, 1 << p, 37))
    words = pack_dense(vals, p, w)
    assert len(words) == words_for(37, p, w) and all(0 <= x < (1 << w) for x in words)
    assert unpack_dense(words, p, w, 37) == vals


def test_convert_beats():
    vals = list(range(20))
    beats = convert(pack_dense(vals, 6, 64), 6, 64, 4)
    assert len(beats) == 2 * 64 // 24                      # 5 complete beats from 2 words
    assert beats[:5] == [vals[0:4], vals[4:8], vals[8:12], vals[12:16], vals[16:20]]


def test_split_planes():
    k = np.array([-128, -1, 0, 1, 127, 0x35, -0x35])
    msb, lsb = split_planes(k, 4, 4)
    assert np.array_equal((msb << 4) | lsb, k)
    assert msb.min() >= -8 and msb.max() <= 7 and lsb.min() >= 0 and lsb.max() <= 15
    with pytest.raises(ValueError):
        split_planes([128], 4, 4)


def test_thresholds_zero_and_above_one():
    rng = np.random.default_rng(1)
    keys = rng.integers(-128, 128, (16, CFG.dim))
    q = rng.integers(-128, 128, CFG.dim)
    p0, f0, b0 = progressive_query(q, keys, 0, CFG)
    assert not f0 and b0 == CFG.plane_bytes(16, 4)
    p1, f1, b1 = progressive_query(q, keys, (1 << CFG.softmax.out_frac) + 1, CFG)
    assert f1 and b1 == 2 * CFG.plane_bytes(16, 4)
    full = softmax_fx(np.clip(np.round(keys @ q / 16), -32768, 32767).astype(np.int64),
                      CFG.softmax)
    # threshold above 1.0 always recomputes at full precision (ties in /16 rounding aside)
    assert np.abs(p1 - full).max() <= 1
    msb, _ = split_planes(keys, 4, 4)
    assert np.array_equal(p0, progressive_query(q, msb << 4, 0, CFG)[0])


def test_threshold_monotone_traffic():
    rng = np.random.default_rng(2)
    keys = rng.integers(-128, 128, (32, CFG.dim))
    queries = rng.integers(-128, 128, (40, CFG.dim))
    fr = [run_queries(queries, keys, t, CFG)["fetched_fraction"] for t in (0, 64, 128, 200, 257)]
    assert fr[0] == 0 and fr[-1] == 1 and fr == sorted(fr)


# ------------------------------------------------------------------ converter (Amaranth sim)

@pytest.mark.parametrize("name, value", [("word_bits", 4), ("lanes", 0), ("widths", (0, 4)),
                                         ("widths", (4, 4)), ("widths", [2, 4])])
def test_init_wrong(name, value):
    with pytest.raises(ValueError, match=name):
        BitwidthConverter(**{name: value})


def run_converter(dut, planes, *, gaps=0.3, stalls=0.3, seed=0):
    """``planes``: list of (width_index, values). Returns the beats seen and the expected ones."""
    rng = random.Random(seed)
    words, expected = [], []
    for k, vals in planes:
        p = dut.widths[k]
        ws = pack_dense(vals, p, dut.word_bits)
        words += [{"data": x, "width": k if j == 0 else rng.randrange(len(dut.widths)),
                   "first": int(j == 0)} for j, x in enumerate(ws)]
        expected += convert(ws, p, dut.word_bits, dut.lanes)
    got = []
    src = {"done": False}

    async def source(ctx):
        for wd in words:
            while rng.random() < gaps:
                await ctx.tick()
            ctx.set(dut.i.payload, wd)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
        src["done"] = True

    async def sink(ctx):
        idle = 0
        while (len(got) < len(expected) or not src["done"]) and idle < 500:
            ready = rng.random() >= stalls
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            idle = 0 if valid else idle + 1
            if ready and valid:
                got.append([int(x) for x in payload.lanes])

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()
    return got, expected


@pytest.mark.parametrize("word_bits, lanes", [(64, 8), (16, 3), (24, 5)])
def test_converter_every_width(word_bits, lanes):
    dut = BitwidthConverter(word_bits=word_bits, lanes=lanes)
    rng = np.random.default_rng(word_bits + lanes)
    planes = []
    for rep in range(3):
        for k, p in enumerate(dut.widths):
            n = int(rng.integers(1, 60))
            planes.append((k, list(rng.integers(0, 1 << p, n))))
    got, exp = run_converter(dut, planes)
    assert got == exp and len(exp) > 50


def test_converter_straddle_explicit():
    """6-bit values in 64-bit words: value 10 is bits 60..65 (4 bits in word 0, 2 in word 1),
    value 21 is bits 126..131; all-ones / alternating patterns expose any lost or shifted bit."""
    dut = BitwidthConverter(word_bits=64, lanes=1)
    vals = [(0b101010 if i % 2 else 0b010101) for i in range(32)]
    vals[10], vals[21] = 0b111111, 0b100001
    words = pack_dense(vals, 6, 64)
    assert (words[0] >> 60) == 0b1111 and (words[1] & 0b11) == 0b11     # really straddles
    got, exp = run_converter(dut, [(2, vals)], gaps=0.5, stalls=0.5, seed=3)
    assert got == exp
    assert [g[0] for g in got[:32]] == vals


def test_converter_full_rate():
    """No gaps, no stalls: one beat per cycle whenever beats are the bottleneck."""
    dut = BitwidthConverter(word_bits=64, lanes=2)     # 2-bit: 4 bits/beat, 16 beats per word
    vals = list(range(4)) * 64
    got, exp = run_converter(dut, [(0, vals)], gaps=0, stalls=0)
    assert got == exp
