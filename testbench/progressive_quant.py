"""cocotb testbench of the progressive-quantization unit, checked against
:func:`attnforge.golden.progressive_quant.progressive_query`.

Queries are generated first (random rows, equal scores, one dominant score, extreme values,
n = 1, n = max_len, thresholds 0 / above 1.0 / exactly at max(p) / random, bad n); their key
planes are packed with the golden :func:`pack_dense` into a memory model at random word
addresses. The driver puts the queries on ``cmd`` with random gaps; the memory model takes
requests from ``req`` under random stalls and answers each with its words on ``resp`` after a
random latency and with random gaps; the monitor takes ``o`` under random stalls. The
scoreboard checks every output beat (probabilities bit-exact, count, last, fetched, error) and,
on a query's last beat, the requests the memory model served for that query: exactly the MSB
plane, plus the LSB plane iff the golden model fetched it, with the golden byte count.
"""

from collections import deque

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge

from ..golden.progressive_quant import pack_dense, progressive_query, split_planes
from ..rtl.progressive_quant import cmd_layout, prob_layout, req_layout, resp_layout
from .kit import BackPressure, Bench, Codec, make_rng, scale, size_bin

#: The quick subset a mutant run uses (``make mutants``).
MUTANT_TESTS = ("random_queries", "corners", "bad_requests", "kill_queries")

#: Softmax input rows (the scores ``x`` the dot products give) whose probabilities depend on
#: the last bit of the row's reciprocal ``R = floor(2**Q / S)``, played by
#: :func:`kill_queries` as queries that fetch the LSB plane and produce exactly these scores
#: (:func:`score_query`). Found for the survivor of ``MUTANTS=3 MUTANT_SEED=1 MUTANT_FLATTEN=1
#: make mutants UNITS=progressive_quant`` (#2: ``cnot0`` on bit 2 of the divisor input of the
#: subtraction of quotient step 1 of stage 1 of the restoring divider, ``rtl/softmax.py:239``,
#: in the copy that reaches only the remainder register ``rem2``): the mutated divider,
#: Verilated alone and run over every divisor, gives a different ``R`` (by one) for 1 641 of
#: the ~10**6 sums ``S`` a row can have; among random rows (default format) about one in
#: 35 000 has such a sum *and* a probability on a rounding boundary, so the random campaign
#: (240 queries) never meets one. Any correct design passes them (the golden model checks).
KILL_ROWS = (
    (-150, 85, -21, -113, -156),
    (1785, 1459, 402, -532),
    (-23, -41, 2, -56, -23, -1, 4),
    (-50, 54, 31, 44, 57, -39),
    # Sixth session, ``MUTANTS=10 MUTANT_SEED=1 make mutants UNITS=progressive_quant`` #4
    # (``inv`` on ``shift > 15`` of the sticky-bit mask of ``round_shift``, rtl/numbers.py:50,
    # in the normalization's lane-1 exponential): some table entries round half up instead of
    # to even; these rows (the golden model with that rounding emulated in lane 1, about one
    # row in 3 000) carry a lane-1 probability on a rounding boundary.
    (62, 61, 41, 45, 38, 49, 23, -51, 23, 1, -23, 51, 6),
    (-1969, -30, 1134, -339, -362, 259, -114, -883, 196),
    (1640, -438, -1186, -901, 1326, -653, -133, -60, 166, 1553, -1116),
    (3, -49, -58, -23, -24),
)

#: Names of :func:`make_queries`' kinds, in order.
KINDS = ("random", "equal scores", "one dominant", "extremes", "small keys",
         "threshold at max(p)", "random 2", "bad n")


class Query:
    """One query: the command fields and what the golden model says about it."""

    def __init__(self, q, keys, threshold, n=None):
        self.q, self.keys, self.threshold = [int(x) for x in q], keys, int(threshold)
        self.n = len(keys) if keys is not None else int(n)
        self.msb_addr = self.lsb_addr = 0
        self.planes = []
        self.kind = None               # the make_queries kind, for functional coverage
        self.at_max = False            # kind 5: threshold exactly max(p) (else max(p) + 1)


def make_queries(unit, rng, n_queries, kinds=range(8)):
    """Queries of every kind in turn (see the module docstring); ``rng`` is a NumPy Generator."""
    cfg = unit.config
    klo, khi = -(1 << (cfg.key_bits - 1)), (1 << (cfg.key_bits - 1)) - 1
    qlo, qhi = -(1 << (cfg.q_bits - 1)), (1 << (cfg.q_bits - 1)) - 1
    one = 1 << unit.out_frac
    kinds = list(kinds)
    out = []
    for k in range(n_queries):
        kind = kinds[k % len(kinds)]
        n = int(rng.choice([1, unit.max_len, rng.integers(1, unit.max_len + 1),
                            rng.integers(1, unit.max_len + 1)]))
        q = rng.integers(qlo, qhi + 1, cfg.dim)
        keys = rng.integers(klo, khi + 1, (n, cfg.dim))
        if kind == 1:                                    # equal scores
            keys[:] = keys[0]
        elif kind == 2:                                  # one dominant score
            keys = rng.integers(-2, 3, (n, cfg.dim))
            keys[rng.integers(n)] = np.where(q >= 0, khi, klo)
        elif kind == 3:                                  # extremes
            q = rng.choice([qlo, qhi, 0, -1, 1], cfg.dim)
            keys = rng.choice([klo, khi, 0, -1, 1], (n, cfg.dim))
        elif kind == 4:                                  # small keys: flat rows, LSBs matter
            keys = rng.integers(-(1 << cfg.lsb_bits), 1 << cfg.lsb_bits, (n, cfg.dim))
        thr = int(rng.choice([0, one + 1, (1 << (unit.out_frac + 1)) - 1,
                              rng.integers(0, one + 1), rng.integers(0, one + 1)]))
        if kind == 5:                                    # threshold exactly at max(p) or above
            above = int(rng.integers(2))
            thr = int(progressive_query(q, keys, 0, cfg)[0].max()) + above
        if kind == 7:                                    # bad request
            out.append(Query(q, None, thr, rng.choice([0, unit.max_len + 1,
                                                       (1 << unit.n_bits) - 1])))
        else:
            out.append(Query(q, keys, thr))
        out[-1].kind = KINDS[kind]
        out[-1].at_max = kind == 5 and not above
    return out


class MemoryModel:
    """Word-addressed memory behind ``req``/``resp``: takes a request (random ready stalls),
    answers its ``count`` words after a random latency, with random gaps between words.

    ``requests`` lists every request served since the last :meth:`take`.
    """

    def __init__(self, bench, rng, *, latency=(0, 12), gaps=0.3, stalls=0.3):
        self.dut, self.unit, self.rng, self.bench = bench.dut, bench.unit, rng, bench
        bench.coverpoint("mem_latency", [(plane, lat) for plane in (0, 1)
                                         for lat in ("0", "1..12", "> 12")])
        unit = self.unit
        self.words = {}
        self.latency = latency
        self.gaps = BackPressure(rng, gaps)
        self.requests = []
        self.queue = deque()                 # [earliest cycle, word]
        self.cycle = 0
        self.presenting = False
        self.codec = Codec(resp_layout(unit.word_bits))
        self.dut.resp__valid.value = 0
        self.req = bench.sink("req", req_layout(unit.addr_bits, unit.count_bits),
                              callback=self._on_request, stalls=stalls)
        self._task = cocotb.start_soon(self._serve())

    def store(self, query, base):
        """Pack ``query``'s planes at ``base`` (MSB) and right after it (LSB, after a random
        hole); returns the next free address."""
        cfg = self.unit.config
        msb, lsb = split_planes(query.keys, cfg.msb_bits, cfg.lsb_bits)
        query.planes = [pack_dense(msb.ravel(), cfg.msb_bits, cfg.word_bits),
                        pack_dense(lsb.ravel(), cfg.lsb_bits, cfg.word_bits)]
        addrs = []
        for words in query.planes:
            base += self.rng.randrange(3)
            addrs.append(base)
            for i, w in enumerate(words):
                self.words[base + i] = w
            base += len(words)
        assert base <= 1 << self.unit.addr_bits, "memory image larger than the address space"
        query.msb_addr, query.lsb_addr = addrs
        return base

    def _on_request(self, r):
        plane, addr, count = int(r.plane), int(r.addr), int(r.count)
        self.requests.append((plane, addr, count))
        latency = self.rng.randint(*self.latency)
        self.bench.cover("mem_latency", (plane, "0" if latency == 0 else
                                         "1..12" if latency <= 12 else "> 12"))
        ready_at = self.cycle + latency
        for i in range(count):
            assert addr + i in self.words, f"request reads unwritten word {addr + i}"
            self.queue.append([ready_at, self.words[addr + i]])

    def take(self):
        reqs, self.requests = self.requests, []
        return reqs

    def flush(self):
        """Reset: forget queued words and requests (what was in flight is lost)."""
        self.queue.clear()
        self.requests = []
        self.presenting = False
        self.dut.resp__valid.value = 0

    async def _serve(self):
        dut = self.dut
        while True:
            await RisingEdge(dut.clk)
            self.cycle += 1
            if self.presenting and dut.resp__ready.value:
                self.queue.popleft()
                self.presenting = False
            if not self.presenting and self.queue and self.queue[0][0] <= self.cycle:
                gap = self.gaps.delay()
                if gap:
                    self.queue[0][0] = self.cycle + gap
                else:
                    dut.resp__payload.value = self.codec.pack({"data": self.queue[0][1]})
                    self.presenting = True
            dut.resp__valid.value = int(self.presenting)


class PQBench(Bench):
    """Command source, memory model on ``req``/``resp``, monitor + scoreboard on ``o``."""

    def __init__(self, dut, *, gaps=0.3, stalls=0.3, latency=(0, 12)):
        super().__init__(dut, "progressive_quant", gaps=gaps, stalls=stalls)
        u = self.unit
        self.nrng = np.random.default_rng(self.rng.getrandbits(32))
        self.mem = MemoryModel(self, make_rng("progressive_quant.mem"), latency=latency,
                               gaps=gaps, stalls=stalls)
        self.cmd = self.source("cmd", cmd_layout(u.dim, u.q_bits, u.n_bits, u.out_frac + 1,
                                                 u.addr_bits))
        self.o, self.board = self.sink("o", prob_layout(u.per_beat, u.out_frac), self.compare,
                                       callback=self._cover_out)
        # Contract bins: query kinds; n against max_len (bad n: 0 or over max) crossed with
        # whether the LSB plane was fetched; thresholds 0, above 1.0 and at the decision
        # boundary; memory latency per plane (above); output beats by count class and last
        # (dense rows: a partial beat is a query's last), and the error answer (one empty
        # beat: the only empty one and the only one with error, as a good query has n >= 1).
        self.coverpoint("query_kind", KINDS)
        self.coverpoint("n_fetched", [(b, f) for b in ("1", "between", "max") for f in (0, 1)]
                        + [("empty", 0), ("over max", 0)])
        self.coverpoint("threshold", ["0", "above 1.0", "at max(p)", "max(p) + 1", "other"])
        self.coverpoint("out_beat", [("full", 0, 0), ("full", 1, 0), ("partial", 1, 0),
                                     ("empty", 1, 1)])
        # Planes go at increasing addresses from a random base (high address bits exercised).
        self.base = self._random_base()
        self.queries = 0
        self.fetched = 0

    #: Queries one memory image holds (:meth:`play_in_images`): their planes fit above
    #: :meth:`_random_base` whatever the address width.
    IMAGE_QUERIES = 400

    def _random_base(self):
        span = self.IMAGE_QUERIES * (2 * words_per_query(self.unit) + 4)
        return self.rng.randrange(max(1, (1 << self.unit.addr_bits) - span))

    def _cover_out(self, v):
        n = int(v.count)
        self.cover("out_beat", ("empty" if n == 0 else "full" if n == self.unit.per_beat
                                else "partial", int(v.last), int(v.error)))

    def _cover_query(self, query, fetched):
        one = 1 << self.unit.out_frac
        if query.kind:
            self.cover("query_kind", query.kind)
        self.cover("n_fetched", (size_bin(query.n, self.unit.max_len), int(fetched)))
        t = query.threshold
        if query.kind == "threshold at max(p)":
            self.cover("threshold", "at max(p)" if query.at_max else "max(p) + 1")
        else:
            self.cover("threshold", "0" if t == 0 else "above 1.0" if t > one else "other")

    def on_reset(self):
        """The memory model forgets the requests and words in flight."""
        self.mem.flush()

    def compare(self, expected, actual):
        got = {"data": [int(x) for x in actual.data], "count": int(actual.count),
               "last": int(actual.last), "fetched": int(actual.fetched),
               "error": int(actual.error)}
        beat = {k: expected[k] for k in got}
        if got != beat:
            return f"query {expected['query']}: expected {beat}, got {got}"
        if got["last"]:
            reqs = self.mem.take()
            nbytes = sum(c for _, _, c in reqs) * self.unit.word_bits // 8
            if reqs != expected["requests"] or nbytes != expected["bytes"]:
                return (f"query {expected['query']}: requests {reqs} ({nbytes} bytes), "
                        f"expected {expected['requests']} ({expected['bytes']} bytes)")
        return None

    def expected_beats(self, query):
        P = self.unit.per_beat
        tag = self.queries
        if query.keys is None:
            self._cover_query(query, 0)
            return [{"data": [0] * P, "count": 0, "last": 1, "fetched": 0, "error": 1,
                     "requests": [], "bytes": 0, "query": tag}]
        probs, fetched, nbytes = progressive_query(query.q, query.keys, query.threshold,
                                                   self.unit.config)
        self._cover_query(query, fetched)
        self.fetched += fetched
        reqs = [(0, query.msb_addr, len(query.planes[0]))]
        if fetched:
            reqs.append((1, query.lsb_addr, len(query.planes[1])))
        n = len(probs)
        return [{"data": [int(x) for x in probs[b:b + P]] + [0] * max(0, b + P - n),
                 "count": min(P, n - b), "last": int(b + P >= n), "fetched": int(fetched),
                 "error": 0, "requests": reqs, "bytes": nbytes, "query": tag}
                for b in range(0, n, P)]

    def play(self, queries):
        for query in queries:
            if query.keys is not None:
                self.base = self.mem.store(query, self.base)
            self.board.expect_all(self.expected_beats(query))
            self.cmd.send({"q": query.q, "n": query.n, "threshold": query.threshold,
                           "msb_addr": query.msb_addr, "lsb_addr": query.lsb_addr})
            self.queries += 1

    async def play_in_images(self, queries):
        """Play ``queries`` in batches of :attr:`IMAGE_QUERIES`: before each batch after the
        first, wait until every beat of the earlier ones is checked, then start a new memory
        image at a new random base. A scaled campaign (``make soak``) would otherwise outgrow
        the ``addr_bits`` address space; the default campaign is one batch."""
        n = self.IMAGE_QUERIES
        for i in range(0, len(queries), n):
            if i:
                await self.board.wait(self.dut.clk, 1500 * (n + 2))
                self.mem.words.clear()
                self.base = self._random_base()
            self.play(queries[i:i + n])

    async def finish(self):
        await super().finish(1500 * (self.queries + 2))


def score_query(unit, x, rng):
    """A query (``q``, ``keys``) whose full-precision dot products requantize to exactly the
    scores ``x``, or None when the unit's widths cannot express them: ``q = (c, ..., c, 1)``
    with ``c = 2**(q_bits - 2)``, so ``s_i = c * (k_i0 + ... + k_i,dim-2) + k_i,dim-1`` is
    ``x_i << score_shift`` (an exact requantization) for keys split from it."""
    cfg = unit.config
    c = 1 << (cfg.q_bits - 2)
    klo, khi = -(1 << (cfg.key_bits - 1)), (1 << (cfg.key_bits - 1)) - 1
    if cfg.dim < 2 or c > khi:
        return None
    keys = []
    for xi in x:
        a, r = divmod(int(xi) << cfg.score_shift, c)      # s = c * a + r, 0 <= r < c
        if not (cfg.dim - 1) * klo <= a <= (cfg.dim - 1) * khi:
            return None
        parts = []
        for j in range(cfg.dim - 1):                       # a split into dim - 1 keys
            rest = cfg.dim - 2 - j
            lo, hi = max(klo, a - rest * khi), min(khi, a - rest * klo)
            parts.append(rng.randint(lo, hi))
            a -= parts[-1]
        keys.append(parts + [r])
    q = [c] * (cfg.dim - 1) + [1]
    keys = np.array(keys, dtype=np.int64)
    s = keys @ np.array(q, dtype=np.int64)
    assert list(s) == [int(xi) << cfg.score_shift for xi in x], "score_query construction"
    return q, keys


def words_per_query(unit):
    return unit.plane_words(unit.max_len, max(unit.msb_bits, unit.lsb_bits))


@cocotb.test()
async def random_queries(dut):
    """Hundreds of queries of every kind, random memory latency, gaps and stalls everywhere."""
    tb = PQBench(dut)
    await tb.start()
    await tb.play_in_images(make_queries(tb.unit, tb.nrng, scale(240)))
    await tb.finish()
    dut._log.info("checked %d beats of %d queries, %d fetched the LSB plane",
                  tb.board.checked, tb.queries, tb.fetched)
    assert 0 < tb.fetched < tb.queries


@cocotb.test()
async def heavy_backpressure(dut):
    """Long memory latency, long gaps and stalls: payloads held, nothing lost or duplicated."""
    tb = PQBench(dut, gaps=0.7, stalls=0.8, latency=(0, 40))
    await tb.start()
    tb.play(make_queries(tb.unit, tb.nrng, 30))
    await tb.finish()


@cocotb.test()
async def corners(dut):
    """n = 1 and n = max_len with thresholds 0 (never fetch), 2**out_frac + 1 and the largest
    threshold (always fetch); equal scores; one dominant score; extreme values."""
    tb = PQBench(dut)
    await tb.start()
    u, cfg = tb.unit, tb.unit.config
    one = 1 << u.out_frac
    queries = []
    for n in (1, u.max_len):
        for kind in range(5):
            for thr in (0, one + 1, (1 << (u.out_frac + 1)) - 1):
                (query,) = make_queries(u, tb.nrng, 1, kinds=[kind])
                keys = query.keys[:1] if n == 1 else np.resize(query.keys, (n, cfg.dim))
                queries.append(Query(query.q, keys, thr))
    tb.play(queries)
    await tb.finish()
    # Threshold 0 never fetches, a threshold above 1.0 always does (the golden model agrees;
    # this pins the contract independently of it).
    assert all(progressive_query(q.q, q.keys, q.threshold, cfg)[1] == (q.threshold > one)
               for q in queries)


@cocotb.test()
async def bad_requests(dut):
    """n = 0, n = max_len + 1 and the largest n: one error beat each, no memory request; good
    queries around them are unaffected."""
    tb = PQBench(dut)
    await tb.start()
    u = tb.unit
    good = make_queries(u, tb.nrng, 12, kinds=[0, 2, 4])
    queries = []
    for k, n in enumerate([0, u.max_len + 1, (1 << u.n_bits) - 1, 0, u.max_len + 2]):
        queries += [Query(good[2 * k].q, None, k * 37, n), good[2 * k + 1]]
    tb.play(queries)
    await tb.finish()


@cocotb.test()
async def kill_queries(dut):
    """The rows of :data:`KILL_ROWS` that fit the unit, as queries that fetch the LSB plane
    (threshold above 1.0) and score exactly those rows: probabilities on a rounding boundary
    of the reciprocal's last bit."""
    tb = PQBench(dut)
    await tb.start()
    u = tb.unit
    queries = []
    for row in KILL_ROWS:
        made = score_query(u, row, tb.rng) if len(row) <= u.max_len else None
        if made is not None:
            queries.append(Query(made[0], made[1], (1 << u.out_frac) + 1))
    tb.play(queries)
    await tb.finish()
    dut._log.info("played %d of %d directed rows", len(queries), len(KILL_ROWS))


@cocotb.test()
async def reset_mid_query(dut):
    """Reset at random points of a query (MSB words arriving, softmax running, LSB fetch,
    output half taken): nothing comes out after the reset, what came out before is a prefix
    of the golden answer, and the next queries are answered exactly."""
    tb = PQBench(dut, gaps=0.2, stalls=0.5, latency=(0, 6))
    await tb.start()
    await tb.reset()                    # a reset of the idle unit changes nothing
    u = tb.unit
    cut = 0
    for round_ in range(8):
        (query,) = make_queries(u, tb.nrng, 1, kinds=[0])
        query = Query(query.q, np.resize(query.keys, (u.max_len, u.dim)),
                      (1 << (u.out_frac + 1)) - 1)                     # always fetches
        tb.play([query])               # what comes out before the reset is checked as usual
        # Up to the no-stall duration: under stalls most resets cut the query (some rounds may
        # reset between queries, which must work too).
        await ClockCycles(dut.clk, tb.rng.randint(3, u.query_cycles(u.max_len, True)))
        while not tb.cmd.idle:
            await RisingEdge(dut.clk)
        cut += not tb.board.done
        await tb.reset()
        await ClockCycles(dut.clk, 2)
        assert not dut.o__valid.value and not dut.req__valid.value, "output survived the reset"
        tb.play(make_queries(u, tb.nrng, 6))
        await tb.finish()
    assert cut >= 4, f"only {cut} of 8 resets cut a query"
    await tb.reset_while_busy(lambda: tb.play(make_queries(u, tb.nrng, 4, kinds=[0])))
    tb.play(make_queries(u, tb.nrng, 4))
    await tb.finish()


@cocotb.test()
async def latency_bound(dut):
    """No gaps, no stalls, memory answering the cycle after a request: every query takes at
    most ``query_cycles(n, fetched)`` cycles from command to last beat (the documented bound)."""
    tb = PQBench(dut, gaps=0, stalls=0, latency=(0, 0))
    await tb.start()
    u = tb.unit
    worst = {}
    for kind, thr in ((0, 0), (0, (1 << (u.out_frac + 1)) - 1)):
        for n in sorted({1, max(1, u.max_len // 2), u.max_len}):
            (query,) = make_queries(u, tb.nrng, 1, kinds=[kind])
            query = Query(query.q, np.resize(query.keys, (n, u.dim)), thr)
            tb.play([query])
            start_at = len(tb.cmd.accept_times)
            while len(tb.cmd.accept_times) == start_at:
                await RisingEdge(dut.clk)
            cycles = 1
            while not tb.board.done:
                await RisingEdge(dut.clk)
                cycles += 1
            fetched = thr > 0
            bound = u.query_cycles(n, fetched)
            dut._log.info("n=%d fetched=%d: %d cycles (bound %d)", n, fetched, cycles, bound)
            worst[f"n{n}_fetched{int(fetched)}"] = cycles
            assert cycles <= bound, (n, fetched, cycles, bound)
    tb.figures(worst)
