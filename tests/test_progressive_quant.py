"""Progressive quantization: golden-model tests, Amaranth-simulator tests of the bitwidth
converter (every width, values straddling word boundaries, gaps and stalls) and of the top-level
unit (queries against a memory model with random latency, checked against the golden model),
and generator-parameter checks."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from attnforge.golden.progressive_quant import (PQConfig, convert, pack_dense, progressive_query,
                                                run_queries, split_planes, unpack_dense,
                                                words_for)
from attnforge.golden.softmax import softmax_fx
from attnforge.rtl.progressive_quant import BitwidthConverter, ProgressiveQuant
from attnforge.testbench.quick import sink, source

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

@pytest.mark.parametrize("name, value", [("word_bits", 4), ("per_beat", 0), ("widths", (0, 4)),
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
        expected += convert(ws, p, dut.word_bits, dut.per_beat)
    got = []
    feed = source(dut.i, words, rng, gaps)

    async def feed_then_drain(ctx):
        await feed(ctx)
        for _ in range(300):              # time for the last beats, and for any extra one
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(feed_then_drain)
    sim.add_testbench(sink(dut.o, got, len(expected) + 10**6, rng, stalls,
                           lambda payload: [int(x) for x in payload.lanes]), background=True)
    sim.run()
    return got, expected


@pytest.mark.parametrize("word_bits, per_beat", [(64, 8), (16, 3), (24, 5)])
def test_converter_every_width(word_bits, per_beat):
    dut = BitwidthConverter(word_bits=word_bits, per_beat=per_beat)
    rng = np.random.default_rng(word_bits + per_beat)
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
    dut = BitwidthConverter(word_bits=64, per_beat=1)
    vals = [(0b101010 if i % 2 else 0b010101) for i in range(32)]
    vals[10], vals[21] = 0b111111, 0b100001
    words = pack_dense(vals, 6, 64)
    assert (words[0] >> 60) == 0b1111 and (words[1] & 0b11) == 0b11     # really straddles
    got, exp = run_converter(dut, [(2, vals)], gaps=0.5, stalls=0.5, seed=3)
    assert got == exp
    assert [g[0] for g in got[:32]] == vals


def test_converter_full_rate():
    """No gaps, no stalls: one beat per cycle whenever beats are the bottleneck."""
    dut = BitwidthConverter(word_bits=64, per_beat=2)     # 2-bit: 4 bits/beat, 16 beats per word
    vals = list(range(4)) * 64
    got, exp = run_converter(dut, [(0, vals)], gaps=0, stalls=0)
    assert got == exp


# ------------------------------------------------------------------ top level (Amaranth sim)

def make_queries(dut, rng, n_queries):
    """Random queries covering the corners: random rows, equal keys, one dominant key, n = 1,
    n = max_len, thresholds 0 / random / above 1.0 / exactly max(p) or one above, and bad n
    (0, > max_len)."""
    cfg = dut.config
    klo, khi = -(1 << (cfg.key_bits - 1)), (1 << (cfg.key_bits - 1)) - 1
    qlo, qhi = -(1 << (cfg.q_bits - 1)), (1 << (cfg.q_bits - 1)) - 1
    one = 1 << dut.out_frac
    out = []
    for k in range(n_queries):
        kind = k % 6
        n = int(rng.choice([1, dut.max_len, rng.integers(1, dut.max_len + 1)]))
        q = rng.integers(qlo, qhi + 1, cfg.dim)
        keys = rng.integers(klo, khi + 1, (n, cfg.dim))
        if kind == 1:
            keys[:] = keys[0]                                 # equal scores
        elif kind == 2:
            keys = rng.integers(-2, 3, (n, cfg.dim))          # one dominant score
            keys[rng.integers(n)] = np.where(q >= 0, khi, klo)
        thr = int(rng.choice([0, one + 1, (1 << (dut.out_frac + 1)) - 1,
                              rng.integers(0, one + 1), rng.integers(0, one + 1)]))
        if kind == 3:                   # threshold exactly at max(p) (no fetch) or one above
            thr = int(progressive_query(q, keys, 0, cfg)[0].max()) + int(rng.integers(2))
        if kind == 5:
            out.append((q, None, thr, int(rng.choice([0, dut.max_len + 1,
                                                        (1 << dut.n_bits) - 1]))))
        else:
            out.append((q, keys, thr, n))
    return out


def run_pq(dut, queries, *, seed=0, latency=(0, 8), gaps=0.3, stalls=0.3):
    """Drive ``queries`` ((q, keys or None, threshold, n)) through ``dut`` with a memory model
    of random latency; returns (outputs per query, requests per query, expected, cycles)."""
    rng = random.Random(seed)
    cfg = dut.config
    mem, cmds, expected = {}, [], []
    addr = 0
    for q, keys, thr, n in queries:
        if keys is None:
            cmds.append({"q": list(q), "n": n, "threshold": thr, "msb_addr": 0, "lsb_addr": 0})
            expected.append(None)
            continue
        msb, lsb = split_planes(keys, cfg.msb_bits, cfg.lsb_bits)
        planes = [pack_dense(msb.ravel(), cfg.msb_bits, cfg.word_bits),
                  pack_dense(lsb.ravel(), cfg.lsb_bits, cfg.word_bits)]
        bases = []
        for words in planes:
            addr += rng.randrange(3)
            bases.append(addr % (1 << dut.addr_bits))
            for i, wd in enumerate(words):
                mem[(addr + i) % (1 << dut.addr_bits)] = wd
            addr += len(words)
        cmds.append({"q": list(q), "n": len(keys), "threshold": thr, "msb_addr": bases[0],
                     "lsb_addr": bases[1]})
        expected.append((*progressive_query(q, keys, thr, cfg), bases,
                         [len(w) for w in planes]))
    P = dut.per_beat
    n_beats = sum(1 if e is None else -(-len(e[0]) // P) for e in expected)
    n_reqs = sum(0 if e is None else 1 + int(e[1]) for e in expected)
    beats, reqs, pending = [], [], []
    state = {"cycles": 0, "first": None}

    def on_request(p):
        """The memory model: a taken request schedules its words after a random latency."""
        req = (int(p.plane), int(p.addr), int(p.count))
        pending.extend([None] * rng.randint(*latency) +
                       [mem[(req[1] + i) % (1 << dut.addr_bits)] for i in range(req[2])])
        return req

    def on_beat(p):
        if state["first"] is None:
            state["first"] = state["cycles"]
        return {"data": [int(x) for x in p.data], "count": int(p.count), "last": int(p.last),
                "fetched": int(p.fetched), "error": int(p.error)}

    async def mem_responses(ctx):
        while True:
            if pending and pending[0] is not None and rng.random() >= gaps:
                ctx.set(dut.resp.payload.data, pending[0])
                ctx.set(dut.resp.valid, 1)
                await ctx.tick().until(dut.resp.ready)
                ctx.set(dut.resp.valid, 0)
                pending.pop(0)
            else:
                if pending and pending[0] is None:
                    pending.pop(0)
                await ctx.tick()

    async def clock(ctx):                 # cycles since the start (for the timing tests)
        async for _ in ctx.tick():
            state["cycles"] += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(clock, background=True)
    sim.add_testbench(source(dut.cmd, cmds, rng, gaps), background=True)
    sim.add_testbench(sink(dut.req, reqs, n_reqs, rng, stalls, on_request), background=True)
    sim.add_testbench(mem_responses, background=True)
    sim.add_testbench(sink(dut.o, beats, n_beats, rng, stalls, on_beat))
    sim.run()
    outs, cur = [], []
    for beat in beats:                    # group the beats by query
        cur.append(beat)
        if beat["last"]:
            outs.append(cur)
            cur = []
    by_query, it = [], iter(reqs)         # and the requests (in order: one query at a time)
    for e in expected:
        by_query.append([] if e is None else [next(it) for _ in range(1 + int(e[1]))])
    run_pq.first_beat = state["first"]
    return outs, by_query, expected, state["cycles"]


def check_pq(dut, outs, reqs, expected):
    P, cfg = dut.per_beat, dut.config
    assert len(outs) == len(expected)
    fetched = 0
    for k, (got, req, exp) in enumerate(zip(outs, reqs, expected)):
        if exp is None:
            assert got == [{"data": [0] * P, "count": 0, "last": 1, "fetched": 0, "error": 1}]
            assert req == [], k
            continue
        probs, fetch, nbytes, bases, nwords = exp
        n = len(probs)
        beats = [{"data": list(probs[b:b + P]) + [0] * (P - len(probs[b:b + P])),
                  "count": min(P, n - b), "last": int(b + P >= n), "fetched": int(fetch),
                  "error": 0} for b in range(0, n, P)]
        assert got == beats, (k, got, beats)
        assert req == [(0, bases[0], nwords[0])] + ([(1, bases[1], nwords[1])] if fetch else [])
        assert sum(c for _, _, c in req) * cfg.word_bits // 8 == nbytes
        fetched += fetch
    return fetched


SMALL = {"dim": 4, "macs": 2, "per_beat": 2, "max_len": 8}


@pytest.mark.parametrize("params", [
    SMALL,                                                             # 4 + 4 planes
    {"dim": 6, "macs": 3, "q_bits": 6, "msb_bits": 6, "lsb_bits": 4, "word_bits": 32,
     "per_beat": 3, "max_len": 9, "in_bits": 12, "in_frac": 4, "out_frac": 6, "score_shift": 2},
    {"dim": 3, "macs": 1, "msb_bits": 2, "lsb_bits": 2, "word_bits": 8, "per_beat": 4,
     "max_len": 4, "score_shift": 0},                                  # equal widths, 1 MAC
], ids=["4+4", "6+4", "2+2"])
def test_pq_queries(params):
    dut = ProgressiveQuant(**params)
    queries = make_queries(dut, np.random.default_rng(len(params)), 36)
    outs, reqs, expected, _ = run_pq(dut, queries, seed=1)
    fetched = check_pq(dut, outs, reqs, expected)
    assert 0 < fetched < sum(e is not None for e in expected)     # both paths exercised


def test_pq_no_gaps_no_latency():
    """Memory answering at once, no gaps or stalls: same answers (the pipeline's full-rate
    corner: converter beats every cycle, softmax input beats back to back)."""
    dut = ProgressiveQuant(**SMALL)
    queries = make_queries(dut, np.random.default_rng(7), 18)
    outs, reqs, expected, _ = run_pq(dut, queries, latency=(0, 0), gaps=0, stalls=0)
    check_pq(dut, outs, reqs, expected)


@pytest.mark.parametrize("params", [
    {}, {"dim": 16, "macs": 8, "msb_bits": 8, "lsb_bits": 8, "word_bits": 32, "max_len": 8},
    {"dim": 6, "macs": 3, "msb_bits": 6, "lsb_bits": 4, "word_bits": 32, "per_beat": 3,
     "max_len": 12}])
def test_pq_cycle_bound(params):
    """One query alone, no latency, gaps or stalls: within ``query_cycles`` (words-bound and
    beats-bound configurations), and the MSB-only path is the shorter one."""
    rng = np.random.default_rng(3)
    for n in (1, 2, 5, params.get("max_len", 16)):
        got = {}
        for thr in (0, 511):
            dut = ProgressiveQuant(**params)
            keys = rng.integers(-8, 8, (n, dut.dim))
            q = rng.integers(-8, 8, dut.dim)
            outs, reqs, expected, cycles = run_pq(dut, [(q, keys, thr, n)], latency=(0, 0),
                                                  gaps=0, stalls=0)
            assert check_pq(dut, outs, reqs, expected) == (thr > 0)
            assert cycles <= dut.query_cycles(n, thr > 0), (n, thr, cycles)
            got[thr] = cycles
        assert got[0] < got[511]


@pytest.mark.parametrize("params", [{}, SMALL, {"dim": 6, "macs": 3, "msb_bits": 6,
                                                "word_bits": 32, "per_beat": 3, "max_len": 12},
                                    {"dim": 16, "macs": 2}, {"dim": 16, "macs": 8,
                                                             "word_bits": 16}])
def test_pq_latency(params):
    """``latency``: a one-key query without the LSB fetch, memory answering the cycle after the
    request, nothing stalled -- command handshake to first (and only) output beat."""
    dut = ProgressiveQuant(**params)
    rng = np.random.default_rng(4)
    q, keys = rng.integers(-8, 8, dut.dim), rng.integers(-8, 8, (1, dut.dim))
    outs, reqs, expected, _ = run_pq(dut, [(q, keys, 0, 1)], latency=(0, 0), gaps=0, stalls=0)
    check_pq(dut, outs, reqs, expected)
    assert run_pq.first_beat == dut.latency, (run_pq.first_beat, dut.latency)


@pytest.mark.parametrize("name, value", [
    ("dim", 0), ("dim", 257), ("macs", 0), ("macs", 3), ("macs", 16), ("q_bits", 1),
    ("q_bits", 17), ("msb_bits", 0), ("msb_bits", 9), ("lsb_bits", 0), ("lsb_bits", 9),
    ("word_bits", 4), ("word_bits", 48), ("word_bits", 512), ("score_shift", -1),
    ("score_shift", 41), ("per_beat", 0), ("per_beat", 17), ("max_len", 1), ("max_len", 15),
    ("in_bits", 1), ("in_frac", 17), ("out_frac", 1), ("out_frac", 13), ("table_bits", 1),
    ("addr_bits", 0), ("addr_bits", 49), ("dim", 4.0)])
def test_init_wrong_progressive_quant(name, value):
    with pytest.raises(ValueError, match=name):
        ProgressiveQuant(**{name: value})


def test_layout_and_properties():
    dut = ProgressiveQuant()
    assert dut.config == PQConfig(dim=8, msb_bits=4, lsb_bits=4, word_bits=64, score_shift=4,
                                  softmax=dut.fmt)
    assert dut.plane_words(16, 4) == 8 and dut.count_bits == 4     # 16 x 8 x 4 bits = 8 words
    assert dut.n_bits == 6 and (1 << dut.n_bits) - 1 > dut.max_len  # bad n is expressible
