"""Stream blocks: golden-model tests and quick Amaranth-simulator tests of the RTL.

Every simulator test drives random valid gaps and ready stalls (seeded), compares every output
beat with :mod:`attnforge.golden.streams` and checks the stream rule on every output (and on
every input the test drives): once ``valid & ~ready``, the next cycle ``valid`` is still high and
the payload unchanged (unless reset). Timing tests run with no gaps and no stalls and measure
the figures the docstrings state.
"""

import random

import pytest
from amaranth.hdl import ClockDomain, Module, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.sim import Simulator

from attnforge.golden import streams as golden
from attnforge.rtl import verilog
from attnforge.rtl.streams import (Fork, Join, RowCounter, RowLayout, RowPacker, StreamFIFO,
                                   join_layout)
from attnforge.testbench.quick import sink, source


# ------------------------------------------------------------------ golden model

def _elems(vals, idx=None):
    return [{"data": v, "index": i} for v, i in zip(vals, idx or range(len(vals)))]


def test_pack_hand_worked():
    # one row, beats of 3/0/1 elements (per_beat 3) -> dense beats of 2
    b = [golden.beat(3, _elems([1, 2, 3]), lane=2),
         golden.beat(3, [], lane=2),
         golden.beat(3, _elems([4], [7]), last=1, lane=2)]
    out = golden.pack(b, 2)
    assert [o["count"] for o in out] == [2, 2]
    assert [o["last"] for o in out] == [0, 1]
    assert out[0]["data"] == [1, 2] and out[1]["data"] == [3, 4] and out[1]["index"] == [2, 7]
    assert all(o["lane"] == 2 and o["error"] == 0 for o in out)
    # an empty row, in two empty beats, is one empty beat; errors OR together
    e = [golden.beat(2, [], error=0), golden.beat(2, [], last=1, error=1)]
    assert golden.pack(e, 4) == [golden.beat(4, [], last=1, error=1)]
    # a trailing empty last beat: the last output beat is the one with the elements
    t = golden.row_beats(_elems([5, 6, 7, 8]), 2)
    t[-1]["last"] = 0
    t.append(golden.beat(2, [], last=1))
    assert [o["count"] for o in golden.pack(t, 2)] == [2, 2]
    # error raised late: earlier beats carry the OR so far, the last one the row's
    late = [golden.beat(1, _elems([k]), last=k == 3, error=k == 2) for k in range(4)]
    assert [o["error"] for o in golden.pack(late, 1)] == [0, 0, 1, 1]
    assert [o["error"] for o in golden.pack(late, 3)] == [1, 1]
    assert [o["error"] for o in golden.pack(late[:2] + [golden.beat(1, [], last=1, error=1)],
                                            1)] == [0, 1]


def test_pack_needs_complete_rows():
    with pytest.raises(ValueError, match="last"):
        golden.pack([golden.beat(2, _elems([1]))], 2)
    part = [golden.beat(2, _elems([1, 2])), golden.beat(2, _elems([3]))]
    assert golden.pack_prefix(part, 2) == [golden.beat(2, _elems([1, 2]))]
    assert golden.pack_prefix(part[:1], 2) == []


@pytest.mark.parametrize("p_in", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("p_out", [1, 2, 4, 5])
def test_pack_properties(p_in, p_out):
    rng = random.Random(p_in * 10 + p_out)
    beats = golden.random_rows(rng, 60, p_in, extra={"lane": 2})
    out = golden.pack(beats, p_out)
    rows_in, rows_out = golden.rows(beats), golden.rows(out)
    assert len(rows_in) == len(rows_out)                           # boundaries kept
    for ri, ro in zip(rows_in, rows_out):
        assert golden.elements(ri) == golden.elements(ro)          # same element sequence
        assert all(b["lane"] == ri[0]["lane"] for b in ro)
        assert all(b["error"] == ri[0]["error"] for b in ro)       # constant error: every beat
    assert golden.is_dense(out, p_out)
    assert all(b["count"] == 0 or all(v == 0 for v in b["data"][b["count"]:]) for b in out)
    # round trip P_in -> P_out -> P_in is the dense form of the input; packing is idempotent
    assert golden.pack(out, p_in) == golden.pack(beats, p_in)
    assert golden.pack(out, p_out) == out


def test_pack_late_error_last_beat_carries_row_or():
    rng = random.Random(5)
    beats = golden.random_rows(rng, 200, 3, late_error=True, p_error=0.6)
    out = golden.pack(beats, 2)
    for ri, ro in zip(golden.rows(beats), golden.rows(out)):
        assert ro[-1]["error"] == max(b["error"] for b in ri)
        assert [b["error"] for b in ro] == sorted(b["error"] for b in ro)   # monotone


def test_count_rows_and_trivial_models():
    b = golden.row_beats([{"data": v} for v in range(5)], 2, fields=("data",)) + \
        golden.row_beats([{"data": 9}], 2, fields=("data",))
    out = golden.count_rows(b, 8)
    assert [o["index"] for o in out] == [[0, 1], [2, 3], [4, 0], [0, 0]]
    assert golden.fork(b, 2) == [b, b] and golden.fifo(b) == b
    assert golden.join([1, 2, 3], [4, 5]) == [{"a": 1, "b": 4}, {"a": 2, "b": 5}]


# ------------------------------------------------------------------ parameters

@pytest.mark.parametrize("make, name", [
    (lambda: StreamFIFO(8, 0), "depth"), (lambda: Fork(8, 0), "n"),
    (lambda: RowPacker(0, 2, 8), "per_beat_in"), (lambda: RowPacker(2, 0, 8), "per_beat_out"),
    (lambda: RowCounter(2, 8, 0), "index_bits"), (lambda: RowCounter(0, 8, 4), "per_beat"),
])
def test_init_wrong(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_emits_verilog():
    layout = RowLayout(4, signed(8), 6, {"lane": 2})
    for dut in [StreamFIFO(layout, 4), StreamFIFO(8, 2, buffered=False), Fork(layout, 3),
                Join(layout, 8), RowPacker(3, 4, signed(8), 6, {"lane": 2}),
                RowCounter(4, signed(8), 6)]:
        assert "module top" in verilog(dut, name="top")


# ------------------------------------------------------------------ simulation harness

def as_python(value, shape):
    """A sampled payload as plain Python: dicts for structs, lists for arrays, ints."""
    if isinstance(shape, data.StructLayout):
        return {name: as_python(value[name], field.shape) for name, field in shape}
    if isinstance(shape, data.ArrayLayout):
        return [as_python(value[k], shape.elem_shape) for k in range(shape.length)]
    return value if isinstance(value, int) else int(value.as_value().value)


def monitor(port, log, errors):
    """Background testbench: the cycle of every transfer on ``port`` into ``log``; a stream-rule
    violation (valid dropped or payload changed while stalled, outside reset) into ``errors``."""
    async def run(ctx):
        cycle, held = 0, None
        async for _, rst, valid, ready, payload in ctx.tick().sample(
                port.valid, port.ready, Value.cast(port.payload)):
            if held is not None and not rst and (not valid or payload != held):
                errors.append((cycle, "valid dropped" if not valid else "payload changed"))
            held = payload if valid and not ready and not rst else None
            if valid and ready and not rst:
                log.append(cycle)
            cycle += 1
    return run


def watchdog(limit):
    async def run(ctx):
        for _ in range(limit):
            await ctx.tick()
        raise AssertionError(f"simulation did not finish in {limit} cycles")
    return run


def simulate(dut, inputs, outputs, *, gaps=0.3, stalls=0.3, seed=0, limit=50000):
    """Feed ``inputs`` ({port: [payloads]}) into ``dut``, take ``outputs`` ({port: (shape, n)});
    returns ``({port: [payloads]}, {port: [transfer cycles]})`` for outputs and inputs; fails on
    a stream-rule violation."""
    rng = random.Random(seed)
    m = Module()
    m.domains.sync = ClockDomain()
    m.submodules.dut = dut
    sim = Simulator(m)
    sim.add_clock(1e-6)
    got, times, errors = {}, {}, []
    for port, items in inputs.items():
        sim.add_testbench(source(port, items, rng, gaps))
    for port, (shape, n) in outputs.items():
        got[port] = []
        sim.add_testbench(sink(port, got[port], n, rng, stalls,
                               convert=lambda p, s=shape: as_python(p, s)))
    for port in list(inputs) + list(outputs):
        times[port] = []
        sim.add_testbench(monitor(port, times[port], errors), background=True)
    sim.add_testbench(watchdog(limit), background=True)
    sim.run()
    assert not errors, errors[:5]
    return got, times


# ------------------------------------------------------------------ StreamFIFO

@pytest.mark.parametrize("depth, buffered", [(1, True), (2, True), (3, True), (8, True),
                                             (1, False), (2, False), (5, False)])
def test_fifo_random(depth, buffered):
    layout = RowLayout(2, signed(6), 4, {"lane": 3})
    dut = StreamFIFO(layout, depth, buffered=buffered)
    beats = golden.random_rows(random.Random(depth), 40, 2, value_range=(-32, 31), index_bits=4,
                               extra={"lane": 3})
    got, _ = simulate(dut, {dut.i: beats}, {dut.o: (layout, len(beats))}, seed=depth)
    assert got[dut.o] == golden.fifo(beats)


@pytest.mark.parametrize("depth, buffered", [(1, True), (2, True), (3, True), (4, True),
                                             (1, False), (2, False), (4, False)])
def test_fifo_timing(depth, buffered):
    """Latency (empty queue) and sustained rate, as StreamFIFO.latency / .full_rate state."""
    dut = StreamFIFO(8, depth, buffered=buffered)
    n = 40
    got, t = simulate(dut, {dut.i: list(range(n))}, {dut.o: (8, n)}, gaps=0, stalls=0)
    assert got[dut.o] == list(range(n))
    assert t[dut.o][0] - t[dut.i][0] == dut.latency
    span = t[dut.o][-1] - t[dut.o][0]
    assert span == (n - 1 if dut.full_rate else 2 * (n - 1))


def test_fifo_level():
    """``level`` counts the beats held: fill a stalled queue, then drain it."""
    dut = StreamFIFO(8, 4)
    m = Module()
    m.submodules.dut = dut
    sim = Simulator(m)
    sim.add_clock(1e-6)
    seen = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 0)
        for v in range(6):                        # only 4 fit
            ctx.set(dut.i.payload, v)
            ctx.set(dut.i.valid, 1)
            await ctx.tick()
            seen.append(ctx.get(dut.level))
        ctx.set(dut.i.valid, 0)
        assert ctx.get(dut.i.ready) == 0
        ctx.set(dut.o.ready, 1)
        for _ in range(5):
            await ctx.tick()
            seen.append(ctx.get(dut.level))

    sim.add_testbench(bench)
    sim.run()
    assert seen == [1, 2, 3, 4, 4, 4, 3, 2, 1, 0, 0]


# ------------------------------------------------------------------ Fork and Join

@pytest.mark.parametrize("n", [1, 2, 3])
def test_fork_random(n):
    layout = RowLayout(3, signed(8), 5)
    dut = Fork(layout, n)
    beats = golden.random_rows(random.Random(n), 40, 3, index_bits=5)
    got, _ = simulate(dut, {dut.i: beats}, {o: (layout, len(beats)) for o in dut.o}, seed=n,
                      stalls=0.5)
    assert [got[o] for o in dut.o] == golden.fork(beats, n)


def test_fork_rate():
    dut = Fork(8, 3)
    got, t = simulate(dut, {dut.i: list(range(30))}, {o: (8, 30) for o in dut.o},
                      gaps=0, stalls=0)
    assert all(t[o] == [c + dut.latency for c in t[dut.i]] for o in dut.o)
    assert t[dut.i] == list(range(t[dut.i][0], t[dut.i][0] + 30))


def test_join_random():
    layout = RowLayout(2, None, 6)
    dut = Join(layout, signed(5))
    a = golden.random_rows(random.Random(1), 30, 2, fields=("index",), index_bits=6)
    b = [random.Random(k).randint(-16, 15) for k in range(len(a))]
    got, _ = simulate(dut, {dut.a: a, dut.b: b},
                      {dut.o: (join_layout(layout, signed(5)), len(a))}, seed=3)
    assert got[dut.o] == golden.join(a, b)


def test_join_rate():
    dut = Join(4, 4)
    got, t = simulate(dut, {dut.a: list(range(16)), dut.b: list(range(16))},
                      {dut.o: (join_layout(4, 4), 16)}, gaps=0, stalls=0)
    assert t[dut.a] == t[dut.b] == list(range(t[dut.a][0], t[dut.a][0] + 16))
    assert t[dut.o] == [c + dut.latency for c in t[dut.a]]


# ------------------------------------------------------------------ RowCounter

def test_row_counter_random():
    dut = RowCounter(3, signed(8), 4, {"kth": 4})
    beats = golden.random_rows(random.Random(2), 40, 3, fields=("data",), extra={"kth": 4})
    got, t = simulate(dut, {dut.i: beats}, {dut.o: (dut.o_layout, len(beats))}, seed=2)
    assert got[dut.o] == golden.count_rows(beats, 4)
    assert t[dut.o] == [c + dut.latency for c in t[dut.i]]


# ------------------------------------------------------------------ RowPacker

SHAPES = {   # name -> (value_shape, index_bits, extra, fields)
    "data+index+extra": (signed(8), 6, {"lane": 2}, ("data", "index")),
    "index": (None, 7, None, ("index",)),
    "data": (unsigned(8), 0, {"kth": 3, "tag": 1}, ("data",)),
    "count+extra": (None, 0, {"k": 2}, ()),
}


def packer_case(p_in, p_out, shape, n_rows, seed, **kw):
    value_shape, index_bits, extra, fields = SHAPES[shape]
    dut = RowPacker(p_in, p_out, value_shape, index_bits, extra)
    vrange = (-128, 127) if value_shape is not None and value_shape.signed else (0, 255)
    beats = golden.random_rows(random.Random(seed), n_rows, p_in, fields=fields,
                               value_range=vrange, index_bits=index_bits or 1, extra=extra, **kw)
    return dut, beats


PAIRS = [(1, 1), (1, 4), (2, 4), (3, 4), (4, 4), (2, 3), (4, 2), (4, 3), (4, 1), (5, 2), (8, 8)]


@pytest.mark.parametrize("p_in, p_out", PAIRS)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_packer_random(p_in, p_out, shape):
    seed = 100 * p_in + 10 * p_out + len(shape)
    dut, beats = packer_case(p_in, p_out, shape, 40, seed, late_error=True)
    expected = golden.pack(beats, p_out)
    got, _ = simulate(dut, {dut.i: beats}, {dut.o: (dut.o_layout, len(expected))}, seed=seed)
    assert got[dut.o] == expected


@pytest.mark.parametrize("p_in, p_out", [(1, 1), (2, 4), (3, 4), (4, 4), (4, 2), (5, 2)])
def test_packer_back_to_back(p_in, p_out):
    """No gaps, no stalls, and no gaps with heavy stalls: the same beats."""
    dut, beats = packer_case(p_in, p_out, "data+index+extra", 30, p_in + p_out)
    expected = golden.pack(beats, p_out)
    for gaps, stalls in [(0, 0), (0, 0.7), (0.7, 0)]:
        got, _ = simulate(dut, {dut.i: beats}, {dut.o: (dut.o_layout, len(expected))},
                          gaps=gaps, stalls=stalls, seed=7)
        assert got[dut.o] == expected


@pytest.mark.parametrize("p_in, p_out", [(16, 1), (2, 1)])
def test_packer_lane_shapes(p_in, p_out):
    """The lane's two packers at its sim point (``LaneFront``: the per-row front's 16 -> 1
    behind ``EstimateRows``, the BxB pool's 2 -> 1), one score field: 150 random rows of
    random partial beats, under several gap / stall mixes. The lane's own bench cannot steer
    when the packer's next input beat arrives (the estimate rows come out of a ping-pong
    buffer at their own pace), so the joins at row boundaries are checked here: a row's next
    beat joining while its previous beat's last elements drain (slot ``n - 1`` onward), a
    new row's first beat presented exactly as the ended head's last element leaves with no
    tail (it joins at slot 0), or one cycle earlier (it starts a tail). Lane mutants #2 and
    #21 of the seventh session's sample (docs/verification.md) sit in two of those selects."""
    dut, beats = packer_case(p_in, p_out, "data", 150, 16 * p_in + p_out)
    expected = golden.pack(beats, p_out)
    for seed, (gaps, stalls) in enumerate([(0.3, 0.3), (0.1, 0.6), (0.8, 0)]):
        got, _ = simulate(dut, {dut.i: beats}, {dut.o: (dut.o_layout, len(expected))},
                          gaps=gaps, stalls=stalls, seed=seed)
        assert got[dut.o] == expected, (gaps, stalls, seed)


def simulate_reset(dut, port, before, after, outputs, *, drain=60, seed=4):
    """Feed ``before`` into ``port``, wait ``drain`` cycles, reset for one cycle, feed
    ``after``; take ``outputs`` ({port: (shape, beats expected after the reset)}) with random
    stalls throughout. Returns ``({port: beats before}, {port: beats after})``."""
    m = Module()
    cd = ClockDomain("sync")
    m.domains += cd
    m.submodules.dut = dut
    sim = Simulator(m)
    sim.add_clock(1e-6)
    rng = random.Random(seed)
    state = {"reset": False}
    got = {o: ([], []) for o in outputs}
    errors = []

    async def drive(ctx):
        await source(port, before, rng, 0.3)(ctx)
        for _ in range(drain):
            await ctx.tick()
        ctx.set(cd.rst, 1)
        await ctx.tick()
        ctx.set(cd.rst, 0)
        state["reset"] = True
        await source(port, after, rng, 0.3)(ctx)

    def take(o, shape, n):
        async def run(ctx):
            while len(got[o][1]) < n:
                ready = rng.random() >= 0.3
                ctx.set(o.ready, ready)
                _, rst, valid, payload = await ctx.tick().sample(o.valid, o.payload)
                if valid and ready and not rst:
                    got[o][state["reset"]].append(as_python(payload, shape))
        return run

    sim.add_testbench(drive)
    for o, (shape, n) in outputs.items():
        sim.add_testbench(take(o, shape, n))
        sim.add_testbench(monitor(o, [], errors), background=True)
    sim.add_testbench(watchdog(20000), background=True)
    sim.run()
    assert not errors, errors[:5]
    return {o: g[0] for o, g in got.items()}, {o: g[1] for o, g in got.items()}


@pytest.mark.parametrize("p_in, p_out", [(2, 4), (3, 4), (4, 2), (1, 1)])
def test_packer_reset_mid_row(p_in, p_out):
    """Reset with a row half in: the half row's beats already out stay out, its rest is lost,
    and the packer starts empty (the next rows come out exactly as from a fresh packer)."""
    dut, before = packer_case(p_in, p_out, "data+index+extra", 6, 11)
    _, after = packer_case(p_in, p_out, "data+index+extra", 6, 12)
    half = [golden.beat(p_in, [{"data": k, "index": k} for k in range(p_in)], lane=1)] * 3
    expected = golden.pack(after, p_out)
    pre, post = simulate_reset(dut, dut.i, before + half, after,
                               {dut.o: (dut.o_layout, len(expected))})
    assert pre[dut.o] == golden.pack(before, p_out) + golden.pack_prefix(half, p_out)
    assert post[dut.o] == expected


@pytest.mark.parametrize("buffered", [True, False])
def test_fifo_reset(buffered):
    """Reset with beats queued: they are lost, ``level`` is 0, the next beats pass exactly."""
    dut = StreamFIFO(8, 5, buffered=buffered)
    pre, post = simulate_reset(dut, dut.i, list(range(12)), list(range(100, 120)),
                               {dut.o: (8, 20)}, drain=0)
    assert pre[dut.o] == list(range(len(pre[dut.o])))
    assert post[dut.o] == list(range(100, 120))


def test_fork_reset():
    """Reset while some outputs have taken a beat and others not: every output then gets
    every later beat exactly once."""
    dut = Fork(8, 3)
    pre, post = simulate_reset(dut, dut.i, list(range(10)), list(range(50, 70)),
                               {o: (8, 20) for o in dut.o}, drain=0, seed=8)
    assert all(pre[o] == list(range(len(pre[o]))) for o in dut.o)
    assert all(post[o] == list(range(50, 70)) for o in dut.o)


def test_row_counter_reset_mid_row():
    dut = RowCounter(2, 8, 5)
    half = [golden.beat(2, [{"data": 1}] * 2, fields=("data",))] * 2
    after = golden.random_rows(random.Random(3), 10, 2, fields=("data",), value_range=(0, 255))
    pre, post = simulate_reset(dut, dut.i, half, after, {dut.o: (dut.o_layout, len(after))})
    assert post[dut.o] == golden.count_rows(after, 5)


def _input_stalls(t_in):
    """Cycles, between the first and the last input transfer, without one."""
    return t_in[-1] - t_in[0] + 1 - len(t_in)


@pytest.mark.parametrize("p_in, p_out", [(1, 1), (1, 4), (2, 4), (4, 4), (8, 8), (3, 4)])
def test_packer_rate_full(p_in, p_out):
    """P_in <= P_out, full input beats: one input beat per cycle, rows included."""
    rng = random.Random(p_in + p_out)
    beats = []
    for _ in range(20):
        beats += golden.row_beats([{"data": rng.randint(-9, 9), "index": k}
                                   for k in range(p_in * rng.randint(1, 6))], p_in, lane=1)
    dut = RowPacker(p_in, p_out, signed(8), 6, {"lane": 2})
    expected = golden.pack(beats, p_out)
    got, t = simulate(dut, {dut.i: beats}, {dut.o: (dut.o_layout, len(expected))},
                      gaps=0, stalls=0)
    assert got[dut.o] == expected
    assert _input_stalls(t[dut.i]) == 0


@pytest.mark.parametrize("p_in, p_out", [(3, 4), (2, 3), (2, 4), (4, 4), (1, 3), (5, 5)])
def test_packer_rate_partial(p_in, p_out):
    """P_in <= P_out, any beats (partial, empty, empty rows): one input beat per cycle, rows
    included (the next row begins behind the last beat of the one before)."""
    dut, beats = packer_case(p_in, p_out, "data+index+extra", 80, 3 * p_in + p_out)
    expected = golden.pack(beats, p_out)
    got, t = simulate(dut, {dut.i: beats}, {dut.o: (dut.o_layout, len(expected))},
                      gaps=0, stalls=0)
    assert got[dut.o] == expected
    assert _input_stalls(t[dut.i]) == 0


@pytest.mark.parametrize("p_in, p_out", [(4, 2), (4, 3), (5, 2), (8, 1)])
def test_packer_rate_narrowing(p_in, p_out):
    """P_in > P_out, full input rows: output-bound, one output beat every cycle."""
    rng = random.Random(p_in * p_out)
    beats = []
    for _ in range(20):
        beats += golden.row_beats([{"data": 1, "index": k} for k in range(rng.randint(1, 20))],
                                  p_in, lane=0)
    dut = RowPacker(p_in, p_out, signed(8), 6, {"lane": 2})
    expected = golden.pack(beats, p_out)
    got, t = simulate(dut, {dut.i: beats}, {dut.o: (dut.o_layout, len(expected))},
                      gaps=0, stalls=0)
    assert got[dut.o] == expected
    assert t[dut.o] == list(range(t[dut.o][0], t[dut.o][0] + len(expected)))
    assert t[dut.o][0] == t[dut.i][0] + dut.latency


def test_packer_empty_rows_rate():
    """Empty rows: one per cycle in, one per cycle out, latency 1."""
    dut = RowPacker(2, 3, 8, 4)
    beats = [golden.beat(2, [], last=1, error=k % 2) for k in range(20)]
    got, t = simulate(dut, {dut.i: beats}, {dut.o: (dut.o_layout, 20)}, gaps=0, stalls=0)
    assert got[dut.o] == golden.pack(beats, 3)
    assert t[dut.o] == [c + dut.latency for c in t[dut.i]] and _input_stalls(t[dut.i]) == 0


def test_packer_lookahead_latency():
    """A full beat waiting for the row's fate leaves in the cycle the next beat is presented."""
    dut = RowPacker(2, 2, 8, 4)
    beats = [golden.beat(2, _elems([1, 2])), golden.beat(2, _elems([3], [5]), last=1)]
    got, t = simulate(dut, {dut.i: beats}, {dut.o: (dut.o_layout, 2)}, gaps=0, stalls=0)
    assert got[dut.o] == golden.pack(beats, 2)
    assert t[dut.o] == [t[dut.i][1], t[dut.i][1] + 1]


# ------------------------------------------------------------------ composition

def test_compose_pack_fork_join():
    """Sparse data-only rows (P=3) are packed to P=4, queued, forked to a RowCounter and a
    direct path, and joined again: every beat pairs the packed beat with its indexed twin.
    Every link is a ``wiring.connect``."""

    class Chain(wiring.Component):
        def __init__(self):
            self.pack = RowPacker(3, 4, signed(8))
            self.fifo = StreamFIFO(self.pack.o_layout, 4)
            self.fork = Fork(self.pack.o_layout, 2)
            self.rank = RowCounter(4, signed(8), 6)
            self.join = Join(self.pack.o_layout, self.rank.o_layout)
            super().__init__({"i": wiring.In(self.pack.i.signature.flip()),
                              "o": wiring.Out(self.join.o.signature)})

        def elaborate(self, platform):
            m = Module()
            for name in ("pack", "fifo", "fork", "rank", "join"):
                m.submodules[name] = getattr(self, name)
            wiring.connect(m, wiring.flipped(self.i), self.pack.i)
            wiring.connect(m, self.pack.o, self.fifo.i)
            wiring.connect(m, self.fifo.o, self.fork.i)
            wiring.connect(m, self.fork.o[0], self.join.a)
            wiring.connect(m, self.fork.o[1], self.rank.i)
            wiring.connect(m, self.rank.o, self.join.b)
            wiring.connect(m, self.join.o, wiring.flipped(self.o))
            return m

    dut = Chain()
    beats = golden.random_rows(random.Random(9), 30, 3, fields=("data",))
    packed = golden.pack(beats, 4)
    got, _ = simulate(dut, {dut.i: beats},
                      {dut.o: (join_layout(dut.pack.o_layout, dut.rank.o_layout), len(packed))},
                      seed=9)
    assert got[dut.o] == golden.join(packed, golden.count_rows(packed, 6))


class _RoundTrip(wiring.Component):
    """RowPacker(p, q) -> RowPacker(q, p), joined with wiring.connect."""

    def __init__(self, p, q):
        self.there = RowPacker(p, q, signed(8), 6, {"lane": 2})
        self.back = RowPacker(q, p, signed(8), 6, {"lane": 2})
        super().__init__({"i": wiring.In(self.there.i.signature.flip()),
                          "o": wiring.Out(self.back.o.signature)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.there, m.submodules.back = self.there, self.back
        wiring.connect(m, wiring.flipped(self.i), self.there.i)
        wiring.connect(m, self.there.o, self.back.i)
        wiring.connect(m, self.back.o, wiring.flipped(self.o))
        return m


@pytest.mark.parametrize("p, q", [(3, 5), (4, 2), (2, 2)])
def test_packer_round_trip(p, q):
    """P -> Q -> P in hardware gives the dense form of the input rows (golden pack to P)."""
    dut = _RoundTrip(p, q)
    _, beats = packer_case(p, q, "data+index+extra", 40, p * q)
    expected = golden.pack(beats, p)
    got, _ = simulate(dut, {dut.i: beats}, {dut.o: (dut.back.o_layout, len(expected))},
                      seed=p + q)
    assert got[dut.o] == expected


# ------------------------------------------------------------------ formal (make formal's tools)

class _ForkPorts(wiring.Component):
    """Fork(shape, 2) with its outputs as separate members (the protocol harness walks named
    stream members, not arrays)."""

    def __init__(self, shape):
        self.fork = Fork(shape, 2)
        super().__init__({"i": wiring.In(stream.Signature(shape)),
                          "o0": wiring.Out(stream.Signature(shape)),
                          "o1": wiring.Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.fork = self.fork
        wiring.connect(m, wiring.flipped(self.i), self.fork.i)
        wiring.connect(m, self.fork.o[0], wiring.flipped(self.o0))
        wiring.connect(m, self.fork.o[1], wiring.flipped(self.o1))
        return m


_SMALL = RowLayout(2, signed(4), 3, {"lane": 1})

FORMAL = [   # name, harnessed component, mode, depth
    ("packer_2_3", lambda: RowPacker(2, 3, signed(4), 3, {"lane": 1}), "prove", 8),
    ("packer_3_2", lambda: RowPacker(3, 2, signed(4), 3, {"lane": 1}), "prove", 8),
    ("fifo", lambda: StreamFIFO(_SMALL, 3), "prove", 3),
    ("fork", lambda: _ForkPorts(_SMALL), "prove", 3),
    ("join", lambda: Join(_SMALL, RowLayout(1, None, 3)), "prove", 3),
    ("row_counter", lambda: RowCounter(2, signed(4), 3), "prove", 3),
]


@pytest.mark.formal
@pytest.mark.parametrize("name, make, mode, depth", FORMAL, ids=[f[0] for f in FORMAL])
def test_stream_protocol_proof(name, make, mode, depth):
    """Every output holds valid and payload while stalled, in every reachable state
    (k-induction)."""
    from attnforge.synth.formal import Proof, StreamProtocol, run
    result = run(Proof(f"stream_blocks_{name}", lambda: StreamProtocol(make()), mode, depth,
                       f"{name}: stream protocol"), timeout=300)
    assert result["status"] == "PASS", result


# ------------------------------------------------------------------ valid never waits on ready

def _valid_ignores_ready(dut, inputs, outputs, seed=0):
    """Each cycle, with the inputs as the sources left them, set each output's ready to 0 and
    then to 1 (the others random): its valid and payload must not change (amaranth.lib.stream:
    a producer's valid must not depend on ready). Runs until the sources are done; returns the
    number of checks made with valid high."""
    rng = random.Random(seed)
    m = Module()
    m.domains.sync = ClockDomain()
    m.submodules.dut = dut
    sim = Simulator(m)
    sim.add_clock(1e-6)
    checks, done = [], []

    def feed(port, items):
        async def run(ctx):
            await source(port, items, rng, 0.3)(ctx)
            done.append(port)
        return run

    async def probe(ctx):
        while len(done) < len(inputs):
            for o in outputs:
                for other in outputs:
                    ctx.set(other.ready, rng.random() < 0.7)
                seen = []
                for ready in (0, 1):
                    ctx.set(o.ready, ready)
                    seen.append((ctx.get(o.valid), ctx.get(Value.cast(o.payload))))
                if seen[0] != seen[1]:
                    raise AssertionError(f"{o}: valid/payload with ready 0, 1: {seen}")
                checks.append(seen[0][0])
            await ctx.tick()

    for port, items in inputs.items():
        sim.add_testbench(feed(port, items))
    sim.add_testbench(probe)
    sim.add_testbench(watchdog(20000), background=True)
    sim.run()
    return sum(checks)


def test_valid_ignores_ready():
    layout = RowLayout(2, signed(6), 4, {"lane": 1})
    rows = golden.random_rows(random.Random(6), 60, 2, value_range=(-32, 31), index_bits=4,
                              extra={"lane": 1})
    cases = []
    for make in (lambda: RowPacker(2, 3, signed(6), 4, {"lane": 1}),
                 lambda: RowPacker(2, 1, signed(6), 4, {"lane": 1}),
                 lambda: RowPacker(2, 2, signed(6), 4, {"lane": 1}),
                 lambda: StreamFIFO(layout, 3), lambda: Fork(layout, 3)):
        dut = make()
        cases.append((dut, {dut.i: rows}, list(dut.o) if isinstance(dut, Fork) else [dut.o]))
    dut = Join(layout, layout)
    cases.append((dut, {dut.a: rows, dut.b: rows[::-1]}, [dut.o]))
    dut = RowCounter(2, signed(6), 4, {"lane": 1})
    cases.append((dut, {dut.i: [{k: v for k, v in b.items() if k != "index"} for b in rows]},
                  [dut.o]))
    for dut, inputs, outputs in cases:
        assert _valid_ignores_ready(dut, inputs, outputs) > 50     # valid was high often
