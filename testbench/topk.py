"""cocotb testbench of the top-k engine (``topk``) and its bitonic baseline (``topk_bitonic``),
checked against :class:`attnforge.golden.topk.TopKModel`.

Each request ``(n, k, scores)`` goes on ``req`` and its ``ceil(n/P)`` score beats on ``s``
(random valid gaps on both); the monitor takes ``o`` under random ready stalls and the
scoreboard checks every output beat (indices, count, kth, error, last) in order. The cycle test
runs without gaps or stalls and checks the engine's cycle count against the golden cycle model.
"""

import cocotb
from cocotb.triggers import ClockCycles, RisingEdge
from cocotb.utils import get_sim_time

from ..golden.numbers import value_range
from ..golden.topk import TopKModel, cycle_bound
from ..rtl.topk import TopK, out_layout, req_layout, score_layout
from .kit import (BackPressure, Scoreboard, StreamSink, StreamSource, corner_ints, make_rng,
                  record_figures, reset, start, unit_under_test)

PERIOD_NS = 10


def compare(expected, actual):
    got = {"kth": int(actual.kth), "error": int(actual.error), "count": int(actual.count),
           "last": int(actual.last), "idx": [int(i) for i in actual.idx]}
    return None if got == expected else f"expected {expected}, got {got}"


def make_scores(rng, kind, n, width):
    """Scores of one request: ``random`` (with edge values), ``sorted``, ``reverse``, ``equal``,
    ``ties`` (few distinct values: many ties at the k-th value), ``extremes``."""
    lo, hi = value_range(width)
    if kind == "random":
        return corner_ints(rng, width, n, 0.2)
    if kind == "sorted":
        return sorted(corner_ints(rng, width, n, 0.1))
    if kind == "reverse":
        return sorted(corner_ints(rng, width, n, 0.1), reverse=True)
    if kind == "equal":
        return [rng.choice([lo, hi, 0, rng.randint(lo, hi)])] * n
    if kind == "ties":
        vals = [rng.randint(lo, hi) for _ in range(rng.randint(1, 3))]
        return [rng.choice(vals) for _ in range(n)]
    if kind == "extremes":
        return [rng.choice([lo, hi]) for _ in range(n)]
    raise ValueError(kind)


KINDS = ("random", "random", "sorted", "reverse", "equal", "ties", "extremes")


def random_request(rng, max_n, width):
    n = rng.choice([1, max_n, rng.randint(1, max_n), rng.randint(1, max_n)])
    x = make_scores(rng, rng.choice(KINDS), n, width)
    k = rng.choice([1, n, rng.randint(1, n), rng.randint(1, n)])
    return n, k, x


def bad_request(rng, max_n, width):
    n = rng.randint(1, max_n)
    n, k = rng.choice([(0, rng.randint(0, 3)), (n, 0), (n, n + rng.randint(1, 5)),
                       (max_n + rng.randint(1, 2 * max_n), rng.randint(1, max_n))])
    return n, k, corner_ints(rng, width, n)


class TopKBench:
    """Drivers, monitor and scoreboard around one top-k DUT."""

    def __init__(self, dut, *, gaps=0.3, stalls=0.3):
        self.dut = dut
        self.unit = unit_under_test()
        u = self.unit
        self.model = TopKModel(max_n=u.max_n, width=u.width, lanes=u.lanes)
        self.rng = make_rng("topk")
        self.req = StreamSource(dut, "req", req_layout(u.max_n), self.rng,
                                gaps=BackPressure(self.rng, gaps))
        self.s = StreamSource(dut, "s", score_layout(u.width, u.lanes), self.rng,
                              gaps=BackPressure(self.rng, gaps))
        self.board = Scoreboard("topk.o", compare)
        self.stalls = stalls
        self.last_times = []
        self.requests = 0
        self.beats_sent = 0
        self.o = self._sink()

    def _record(self, view):
        self.board(view)
        if view.last:
            self.last_times.append(get_sim_time("ns"))

    def _sink(self):
        u = self.unit
        return StreamSink(self.dut, "o", out_layout(u.width, u.lanes, u.max_n), self.rng,
                          self._record, stalls=BackPressure(self.rng, self.stalls))

    async def reset(self):
        """Reset the DUT mid-stream; whatever was in flight is dropped on both sides."""
        self.o.stop()
        await reset(self.dut)
        self.board.expected = self.board.expected[:self.board.checked]
        self.o = self._sink()

    def play(self, requests):
        """Queue requests ``(n, k, scores)`` and expect the model's beats for each."""
        P = self.unit.lanes
        for n, k, x in requests:
            self.board.expect_all(self.model.run(n, k, x))
            self.req.send({"n": n, "k": k})
            x = list(x) + [0] * (-len(x) % P)
            for b in range(0, len(x), P):
                self.s.send({"data": x[b:b + P]})
                self.beats_sent += 1
            self.requests += 1

    async def finish(self, requests):
        bound = sum(cycle_bound(max(min(n, self.unit.max_n), 1), self.unit.lanes) + n
                    for n, _, _ in requests)
        await self.board.wait(self.dut.clk, 4 * bound + 500)


@cocotb.test()
async def random_campaign(dut):
    """Hundreds of random requests (random, sorted, reverse, equal, ties, extremes; k = 1,
    k = N, N = 1, N = max_n; a few bad ones) under random gaps and stalls."""
    await start(dut)
    tb = TopKBench(dut)
    u = tb.unit
    count = 300 if u.max_n <= 64 else 80
    reqs = [bad_request(tb.rng, u.max_n, u.width) if tb.rng.random() < 0.08
            else random_request(tb.rng, u.max_n, u.width) for _ in range(count)]
    tb.play(reqs)
    await tb.finish(reqs)
    dut._log.info("checked %d beats of %d requests", tb.board.checked, len(reqs))


@cocotb.test()
async def corner_cases(dut):
    """Every corner the issue names, back to back: N = 1, k = 1, k = N, all equal, many ties
    at the k-th value, sorted, reverse sorted, most negative / most positive values."""
    await start(dut)
    tb = TopKBench(dut, gaps=0.2, stalls=0.5)
    u = tb.unit
    lo, hi = value_range(u.width)
    N = u.max_n
    reqs = [(1, 1, [lo]), (1, 1, [hi]), (1, 1, [0])]
    for n in sorted({2, u.lanes, u.lanes + 1, N // 2 + 1, N}):
        for kind in ("sorted", "reverse", "equal", "ties", "extremes", "random"):
            x = make_scores(tb.rng, kind, n, u.width)
            for k in sorted({1, n, (n + 1) // 2}):
                reqs.append((n, k, x))
    # many ties straddling the k-th position: [hi]*a + [v]*b + [lo]*c, k inside the v block
    n = N
    a, b = N // 4, N // 2
    x = [hi] * a + [7 % (hi + 1)] * b + [lo] * (n - a - b)
    tb.rng.shuffle(x)
    reqs += [(n, a + 1, x), (n, a + b // 2, x), (n, a + b, x), (n, a, x)]
    tb.play(reqs)
    await tb.finish(reqs)


@cocotb.test()
async def bad_requests(dut):
    """k = 0, k > N, N > max_n and N = 0 get exactly one error beat; their scores are drained
    so the good requests around them still line up."""
    await start(dut)
    tb = TopKBench(dut)
    u = tb.unit
    reqs = []
    for _ in range(40):
        reqs.append(bad_request(tb.rng, u.max_n, u.width))
        reqs.append(random_request(tb.rng, u.max_n, u.width))
    reqs += [(0, 0, []), (u.max_n + 1, 1, [0] * (u.max_n + 1)), (3, 4, [1, 2, 3])]
    assert sum(tb.model.run(n, k, x)[0]["error"] for n, k, x in reqs) >= 43
    tb.play(reqs)
    await tb.finish(reqs)


@cocotb.test()
async def exact_cycles(dut):
    """Without gaps or stalls each request takes exactly the golden cycle model's count
    (request handshake to last output handshake), never more than the worst-case bound."""
    await start(dut)
    tb = TopKBench(dut, gaps=0, stalls=0)
    u = tb.unit
    if not isinstance(u, TopK):
        dut._log.info("the cycle model describes the quick-select engine only")
        return
    reqs = [random_request(tb.rng, u.max_n, u.width) for _ in range(60)]
    reqs += [bad_request(tb.rng, u.max_n, u.width) for _ in range(5)]
    figures = []
    for n, k, x in reqs:       # one at a time, so each request's cycles are its own
        first = len(tb.req.accept_times)
        tb.play([(n, k, x)])
        await tb.finish([(n, k, x)])
        cycles = round((tb.last_times[-1] - tb.req.accept_times[first]) / PERIOD_NS)
        want = tb.model.cycles(n, k, x)
        assert cycles == want, f"n={n} k={k}: {cycles} cycles, model says {want}"
        if 1 <= k <= n <= u.max_n:
            assert cycles <= cycle_bound(n, u.lanes)
        figures.append({"n": n, "k": k, "cycles": cycles})
    record_figures({"unit": "topk", "requests": figures})


@cocotb.test()
async def reset_mid_stream(dut):
    """A reset while scores load, and another while winners leave, return the engine to idle:
    no beat survives, and the next requests are answered exactly."""
    await start(dut)
    tb = TopKBench(dut, gaps=0, stalls=0)
    u = tb.unit
    n = u.max_n
    # 1) reset in the middle of loading: send the request and only half of its beats
    tb.req.send({"n": n, "k": 1})
    for b in range(n // u.lanes // 2):
        tb.s.send({"data": [1] * u.lanes})
    while not (tb.req.idle and tb.s.idle):
        await RisingEdge(dut.clk)
    await tb.reset()
    await ClockCycles(dut.clk, 2)
    assert not dut.o__valid.value, "an output beat appeared after reset"
    reqs = [random_request(tb.rng, u.max_n, u.width) for _ in range(10)]
    tb.play(reqs)
    await tb.finish(reqs)
    # 2) reset while winners leave: stall the output so the engine sits in its scan
    tb.o.stop()
    x = list(range(n))
    tb.req.send({"n": n, "k": n})
    for b in range(0, n, u.lanes):
        tb.s.send({"data": x[b:b + u.lanes]})
    for _ in range(4 * n + 50):
        await RisingEdge(dut.clk)
        if dut.o__valid.value:
            break
    assert dut.o__valid.value, "no output beat while the sink stalled"
    await tb.reset()
    await ClockCycles(dut.clk, 2)
    assert not dut.o__valid.value, "an output beat survived the reset"
    reqs = [random_request(tb.rng, u.max_n, u.width) for _ in range(10)]
    tb.play(reqs)
    await tb.finish(reqs)
