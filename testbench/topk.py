"""Stimulus and cocotb testbench of the top-k engines (``topk``, ``topk_quickselect``,
``topk_bitonic``), checked against :class:`attnforge.golden.topk.TopKModel`.

The score generators here are the only ones: the quick Amaranth-simulator tests
(``tests/test_topk.py``) and the benchmark (``benchmarks/topk.py``) import them.

Each request ``(n, k, scores)`` goes on ``req`` and its score row on ``s`` (random valid gaps on
both); the monitor takes ``o`` under random ready stalls and the scoreboard checks every output
beat (indices, scores, count, kth, error, last) in order. ``exact_cycles`` runs without gaps or
stalls and checks each request's cycle count against the engine's golden cycle model.
"""

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge
from cocotb.utils import get_sim_time

from ..golden.numbers import value_range
from ..golden.topk import TopKModel, score_beats
from ..golden.topk_bitonic import BitonicModel
from ..golden.topk_quickselect import QuickSelectModel
from ..rtl.topk import TopK
from ..rtl.topk_parts import out_layout, req_layout, score_layout
from ..rtl.topk_quickselect import QuickSelectTopK
from .kit import BackPressure, Bench, corner_ints, scale, size_bin

PERIOD_NS = 10

#: The quick subset a mutant run uses (``make mutants``). ``exact_cycles`` belongs to it: the
#: cycle count is part of the contract (a function of the request), and a mutant that only
#: costs cycles -- e.g. the bracket filter keeping scores above the bracket
#: (``MUTANTS=24 MUTANT_SEED=1 make mutants UNITS=topk`` #4, ``rtl/topk.py:172``: the chosen
#: digit is still found, one candidate row later) -- breaks it.
MUTANT_TESTS = ("random_campaign", "corner_cases", "reset_mid_stream", "exact_cycles",
                "error_behind_stalled_beat")

#: Request classes (:func:`request_class`).
REQUESTS = ("good", "n = 0", "k = 0", "k > n", "n > max_n", "malformed row")


def request_class(n, k, row, max_n, per_beat):
    """What a request ``(n, k)`` with score beats ``row`` is, by the engine's contract."""
    if n == 0:
        return "n = 0"
    if n > max_n:
        return "n > max_n"
    if k == 0:
        return "k = 0"
    if k > n:
        return "k > n"
    counts = [b["count"] for b in row]
    if sum(counts) != n or any(b.get("error", 0) for b in row) or \
            any(c < per_beat for c in counts[:-1]):
        return "malformed row"
    return "good"

# --- stimulus (random.Random based, for the tests and the cocotb bench) -------------------------

KINDS = ("random", "random", "sorted", "reverse", "equal", "ties", "extremes", "close")


def make_scores(rng, kind, n, score_bits):
    """Scores of one request: ``random`` (with edge values), ``sorted``, ``reverse``, ``equal``,
    ``ties`` (few distinct values: many ties at the k-th value), ``extremes``, ``close``
    (values within 16 of each other: they differ in the lowest bits only, so a digit-serial
    engine needs its last digit to separate them)."""
    lo, hi = value_range(score_bits)
    if kind == "random":
        return corner_ints(rng, score_bits, n, 0.2)
    if kind == "sorted":
        return sorted(corner_ints(rng, score_bits, n, 0.1))
    if kind == "reverse":
        return sorted(corner_ints(rng, score_bits, n, 0.1), reverse=True)
    if kind == "equal":
        return [rng.choice([lo, hi, 0, rng.randint(lo, hi)])] * n
    if kind == "ties":
        vals = [rng.randint(lo, hi) for _ in range(rng.randint(1, 3))]
        return [rng.choice(vals) for _ in range(n)]
    if kind == "extremes":
        return [rng.choice([lo, hi]) for _ in range(n)]
    if kind == "close":
        span = min(15, hi - lo)
        base = rng.randint(lo, hi - span)
        return [base + rng.randint(0, span) for _ in range(n)]
    raise ValueError(kind)


def random_request(rng, max_n, score_bits):
    """A good request ``(n, k, scores)`` (n = 1 and n = max_n, k = 1 and k = n often)."""
    n = rng.choice([1, max_n, rng.randint(1, max_n), rng.randint(1, max_n)])
    x = make_scores(rng, rng.choice(KINDS), n, score_bits)
    k = rng.choice([1, n, rng.randint(1, n), rng.randint(1, n)])
    return n, k, x


def bad_request(rng, max_n, score_bits):
    """A bad request ``(n, k, scores)``: n = 0, k = 0, k > n or n > max_n (its row is still
    sent whole)."""
    n = rng.randint(1, max_n)
    n, k = rng.choice([(0, rng.randint(0, 3)), (n, 0), (n, n + rng.randint(1, 5)),
                       (max_n + rng.randint(1, 2 * max_n), rng.randint(1, max_n))])
    return n, k, corner_ints(rng, score_bits, n)


MALFORMED = ("short", "long", "gap", "flag")


def malformed_row(rng, n, k, x, per_beat, what=None):
    """A score row that does not match ``n``: one element short or long (``short``, ``long``),
    a short beat before ``last`` (``gap``), or a beat flagged ``error`` (``flag``); ``what``
    picks one (default: at random). Returns the beats."""
    what = what or rng.choice(MALFORMED)
    if what == "short":
        row = score_beats(x[:-1], per_beat) if len(x) > 1 else \
            [{"data": [0] * per_beat, "count": 0, "last": 1}]
    elif what == "long":
        row = score_beats(list(x) + [1], per_beat)
    elif what == "gap":
        row = score_beats(x, per_beat)
        row = [{"data": [0] * per_beat, "count": 0, "last": 0}] + row
    else:
        row = score_beats(x, per_beat)
        row[rng.randrange(len(row))]["error"] = 1
    return row


def random_requests(rng, max_n, score_bits, per_beat, count, *, bad=0.08, malformed=0.04):
    """``count`` requests ``(n, k, scores, row)``: good ones, bad ones and malformed rows."""
    out = []
    for _ in range(count):
        u = rng.random()
        if u < bad:
            n, k, x = bad_request(rng, max_n, score_bits)
            out.append((n, k, x, score_beats(x, per_beat)))
        elif u < bad + malformed:
            n, k, x = random_request(rng, max_n, score_bits)
            out.append((n, k, x, malformed_row(rng, n, k, x, per_beat)))
        else:
            n, k, x = random_request(rng, max_n, score_bits)
            out.append((n, k, x, score_beats(x, per_beat)))
    return out


# --- distributions for the benchmark (numpy Generator based) -----------------------------------

def distribution(rng, kind, n, score_bits=16):
    """``n`` scores of a benchmark distribution: ``uniform``; ``gaussian`` (sigma = range/8);
    ``clustered`` (8 distinct values, many ties); ``attention`` (a synthetic attention row:
    softmax of Gaussian logits with a few strong keys, quantized to the score range)."""
    lo, hi = value_range(score_bits)
    if kind == "uniform":
        return rng.integers(lo, hi + 1, n)
    if kind == "gaussian":
        return np.clip(np.round(rng.normal(0, (hi - lo) / 8, n)), lo, hi).astype(np.int64)
    if kind == "clustered":
        return rng.choice(rng.integers(lo, hi + 1, 8), n)
    if kind == "attention":
        logits = rng.normal(0, 1.5, n)
        strong = rng.choice(n, max(1, n // 64), replace=False)
        logits[strong] += rng.uniform(3, 6, len(strong))
        p = np.exp(logits - logits.max())
        p /= p.sum()
        return np.round(lo + (hi - lo) * p / p.max()).astype(np.int64)
    raise ValueError(kind)


def adversarial(n, score_bits=16):
    """Inputs built against sampling pivots and the first-rows bracket: sorted (the sample is
    the smallest), reverse, all equal, 3 values, organ pipe, sawtooth, and ``sample decoy``
    (the sample rows hold values far from the rest)."""
    lo, hi = value_range(score_bits)
    ramp = np.linspace(lo, hi, n).astype(np.int64)
    organ = np.concatenate([ramp[0::2], ramp[1::2][::-1]])
    decoy = np.concatenate([np.full(n // 8, hi), np.linspace(lo, 0, n - n // 8)]).astype(np.int64)
    return {
        "sorted": ramp,
        "reverse": ramp[::-1].copy(),
        "all equal": np.full(n, 5, dtype=np.int64),
        "3 values": np.resize(np.array([-7, 0, 7]), n),
        "organ pipe": organ,
        "sawtooth": (np.arange(n) % 16 - 8).astype(np.int64),
        "sample decoy": decoy,
    }


def model_of(unit):
    """The golden model (beats and cycles) of an engine instance."""
    kw = {"max_n": unit.max_n, "score_bits": unit.score_bits, "per_beat": unit.per_beat}
    if isinstance(unit, TopK):
        return TopKModel(**kw, digit_bits=unit.digit_bits)
    if isinstance(unit, QuickSelectTopK):
        return QuickSelectModel(**kw)
    return BitonicModel(**kw)


def as_dict(view):
    """An output beat (cocotb view or Amaranth payload) as the golden model's dict."""
    return {"kth": int(view.kth), "error": int(view.error), "count": int(view.count),
            "last": int(view.last), "index": [int(i) for i in view.index],
            "data": [int(d) for d in view.data]}


def compare(expected, actual):
    got = as_dict(actual)
    return None if got == expected else f"expected {expected}, got {got}"


# --- cocotb bench --------------------------------------------------------------------------------

class TopKBench(Bench):
    """Drivers, monitor and scoreboard around one top-k DUT."""

    def __init__(self, dut, *, gaps=0.3, stalls=0.3):
        super().__init__(dut, "topk", gaps=gaps, stalls=stalls)
        u = self.unit
        self.model = model_of(u)
        self.req = self.source("req", req_layout(u.max_n))
        self.s = self.source("s", score_layout(u.score_bits, u.per_beat))
        self.last_times = []
        self.o, self.board = self.sink("o", out_layout(u.score_bits, u.per_beat, u.max_n),
                                       compare, callback=self._timed)
        # Contract bins: request classes (good, every bad kind, malformed rows); n against
        # max_n crossed with k against 1 and n; ties at the k-th value; extreme scores; output
        # beats by count class and last, and the error answer (one empty last beat: the only
        # empty beat and the only one with error, by the row-stream contract, as k >= 1).
        self.coverpoint("request", REQUESTS)
        self.coverpoint("n_k", [(nb, kb) for nb in ("1", "between", "max")
                                for kb in ("1", "between", "n") if nb != "1" or kb == "1"])
        self.coverpoint("kth_tie", ["tie at k-th", "no tie", "k = n"])
        self.coverpoint("score_extreme", ["min", "max"])
        self.coverpoint("out_beat", [(c, l, 0) for c in ("partial", "full") for l in (0, 1)]
                        + [("empty", 1, 1)])

    def _timed(self, view):
        if view.last:
            self.last_times.append(get_sim_time("ns"))
        n, P = int(view.count), self.unit.per_beat
        self.cover("out_beat", ("empty" if n == 0 else "full" if n == P else "partial",
                                int(view.last), int(view.error)))

    def _cover_request(self, n, k, x, row):
        u = self.unit
        what = request_class(n, k, row, u.max_n, u.per_beat)
        self.cover("request", what)
        if what != "good":
            return
        self.cover("n_k", (size_bin(n, u.max_n), "1" if k == 1 else "n" if k == n
                           else "between"))
        ranked = sorted(x, reverse=True)
        self.cover("kth_tie", "k = n" if k == n else "tie at k-th" if ranked[k - 1] == ranked[k]
                   else "no tie")
        lo, hi = value_range(u.score_bits)
        if lo in x:
            self.cover("score_extreme", "min")
        if hi in x:
            self.cover("score_extreme", "max")

    def play(self, requests):
        """Queue requests ``(n, k, scores[, row])`` and expect the model's beats for each."""
        for n, k, x, *row in requests:
            row = row[0] if row else score_beats(x, self.unit.per_beat)
            self._cover_request(n, k, x, row)
            self.board.expect_all(self.model.run(n, k, x, row))
            self.req.send({"n": n, "k": k})
            self.s.send_all(row)

    async def finish(self, requests):
        await super().finish(sum(8 * max(len(r[2]), 1) + 100 for r in requests) + 500)


@cocotb.test()
async def random_campaign(dut):
    """Hundreds of random requests (random, sorted, reverse, equal, ties, extremes; k = 1,
    k = n, n = 1, n = max_n; bad requests and malformed rows) under random gaps and stalls."""
    tb = TopKBench(dut)
    await tb.start()
    u = tb.unit
    reqs = random_requests(tb.rng, u.max_n, u.score_bits, u.per_beat,
                           scale(300 if u.max_n <= 64 else 80))
    tb.play(reqs)
    await tb.finish(reqs)
    dut._log.info("checked %d beats of %d requests", tb.board.checked, len(reqs))


@cocotb.test()
async def corner_cases(dut):
    """n = 1, k = 1, k = n, all equal, many ties at the k-th value, sorted, reverse sorted,
    most negative / most positive values, every kind of malformed row, back to back."""
    tb = TopKBench(dut, gaps=0.2, stalls=0.5)
    await tb.start()
    u = tb.unit
    lo, hi = value_range(u.score_bits)
    N = u.max_n
    reqs = [(1, 1, [lo]), (1, 1, [hi]), (1, 1, [0])]
    for n in sorted({2, u.per_beat, u.per_beat + 1, N // 2 + 1, N}):
        for kind in ("sorted", "reverse", "equal", "ties", "extremes", "random", "close"):
            x = make_scores(tb.rng, kind, n, u.score_bits)
            for k in sorted({1, n, (n + 1) // 2}):
                reqs.append((n, k, x))
    a, b = N // 4, N // 2
    x = [hi] * a + [7 % (hi + 1)] * b + [lo] * (N - a - b)
    tb.rng.shuffle(x)
    reqs += [(N, a + 1, x), (N, a + b // 2, x), (N, a + b, x), (N, a, x)]
    for what in MALFORMED:                      # every kind of malformed row, once
        n, k, x = random_request(tb.rng, N, u.score_bits)
        reqs.append((n, k, x, malformed_row(tb.rng, n, k, x, u.per_beat, what)))
    tb.play(reqs)
    await tb.finish(reqs)


@cocotb.test()
async def exact_cycles(dut):
    """Without gaps or stalls each request takes exactly the golden cycle model's count
    (request handshake to last output handshake); the shortest one takes ``unit.latency``."""
    tb = TopKBench(dut, gaps=0, stalls=0)
    await tb.start()
    u = tb.unit
    reqs = [(1, 1, [3])] + [random_request(tb.rng, u.max_n, u.score_bits) for _ in range(40)]
    reqs += [bad_request(tb.rng, u.max_n, u.score_bits) for _ in range(5)]
    figures = []
    for n, k, x in reqs:       # one at a time, so each request's cycles are its own
        first = len(tb.req.accept_times)
        tb.play([(n, k, x)])
        await tb.finish([(n, k, x)])
        cycles = round((tb.last_times[-1] - tb.req.accept_times[first]) / PERIOD_NS)
        want = tb.model.cycles(n, k, x)
        assert cycles == want, f"n={n} k={k}: {cycles} cycles, model says {want}"
        figures.append({"n": n, "k": k, "cycles": cycles})
    assert figures[0]["cycles"] == u.latency
    tb.figures({"unit": type(u).__name__, "latency": figures[0]["cycles"],
                "requests": figures})


@cocotb.test()
async def error_behind_stalled_beat(dut):
    """Each kind of bad request right behind a good one answered by one full last beat (``n =
    k = per_beat``) that waits on ``o`` for long (``ready`` low in bursts of up to 64
    cycles): the engine takes the bad request and reaches its error answer while the good
    answer is still held, and the held payload must not change (the stream contract). The
    good rows set and clear every score bit in every lane. Random stalls are bursts of up
    to 4 cycles, shorter than a bad row takes to reach its error answer (found by
    ``MUTANTS=24 MUTANT_SEED=1 make mutants UNITS=topk`` #11: a bit of the held beat cleared
    while the error answer waits, ``rtl/topk_parts.py:445``, the emitter's ``start_error``)."""
    tb = TopKBench(dut, gaps=0, stalls=0)
    tb.o.stalls = BackPressure(tb.rng, 0.9, burst=64)
    await tb.start()
    u = tb.unit
    P, mask = u.per_beat, (1 << u.score_bits) - 1
    signed_ = [v - (1 << u.score_bits) if v >> (u.score_bits - 1) else v
               for v in (mask, 0x5555 & mask, 0xAAAA & mask, 0)]
    reqs = []
    for i, bad in enumerate([(0, 1), (P, 0), (P, P + 1), (u.max_n + 1, 1)] * 2):
        value = signed_[i % len(signed_)]
        x = [value ^ (tb.rng.getrandbits(1) if i >= 4 else 0) for _ in range(P)]
        n, k = bad
        reqs += [(P, P, x), (n, k, corner_ints(tb.rng, u.score_bits, n))]
    tb.play(reqs)
    # ~9 stalls of ~32 cycles per handshake on average: a budget far above that
    await Bench.finish(tb, 4000 * len(reqs))


@cocotb.test()
async def reset_mid_stream(dut):
    """A reset while scores load, another while winners leave, others with requests queued
    and with answers owed, return the engine to idle: no beat survives, and the next requests
    are answered exactly."""
    tb = TopKBench(dut, gaps=0, stalls=0)
    await tb.start()
    u = tb.unit
    n, P = u.max_n, u.per_beat
    # 1) reset in the middle of loading: the request and half of its row
    tb.req.send({"n": n, "k": 1})
    tb.s.send_all(score_beats([1] * n, P)[:max(1, n // P // 2)])
    await tb.drain_inputs()
    await tb.reset()
    await ClockCycles(dut.clk, 2)
    assert not dut.o__valid.value, "an output beat appeared after reset"
    reqs = [random_request(tb.rng, u.max_n, u.score_bits) for _ in range(10)]
    tb.play(reqs)
    await tb.finish(reqs)
    # 2) reset while winners leave: stall the output so the engine sits in its scan
    tb.o.stop()
    tb.req.send({"n": n, "k": n})
    tb.s.send_all(score_beats(list(range(n)), P))
    for _ in range(8 * n + 50):
        await RisingEdge(dut.clk)
        if dut.o__valid.value:
            break
    assert dut.o__valid.value, "no output beat while the sink stalled"
    await tb.reset()
    await ClockCycles(dut.clk, 2)
    assert not dut.o__valid.value, "an output beat survived the reset"
    tb.sinks.remove(tb.o)
    tb.o, tb.board = tb.sink("o", out_layout(u.score_bits, P, u.max_n), compare,
                             callback=tb._timed)
    # 3) resets with requests still queued, and with answers still owed
    await tb.reset_while_busy(lambda: tb.play([random_request(tb.rng, u.max_n, u.score_bits)
                                               for _ in range(6)]))
    reqs = [random_request(tb.rng, u.max_n, u.score_bits) for _ in range(10)]
    tb.play(reqs)
    await tb.finish(reqs)
