"""Top-k engine (DESIGN.md section 4.4, SpAtten's top-k engine): quick-select with P parallel
comparators, run-time ``n`` and ``k``, winners' indices in ascending order.

The contract (which beats leave, every bit of them) is :mod:`attnforge.golden.topk`; the cycle
count is :meth:`attnforge.golden.topk.TopKModel.cycles`, matched exactly.

Design
------
Three banked memories of ``max_n`` scores, each split into P single-port-write banks of
``max_n / P`` rows (lane ``j`` of row ``i`` is element ``i*P + j``):

* ``mem``: the scores as they arrive (read again by the emission scan),
* ``buf[0]``, ``buf[1]``: the candidate buffers.

A pass streams the candidates (one row of P per cycle) past P comparators against the pivot.
Each comparator says ``>``, ``==`` or ``<``. The ``>`` elements are *compacted* and written back
**in place** into the buffer being read (the "larger" FIFO: its write pointer can never pass
the read pointer), the ``<`` elements into the other buffer (the "smaller" FIFO), the ``==``
ones are only counted. Compaction is a prefix count of the lane masks plus a rotate: element
number ``w + prefix`` lands in bank ``(w + prefix) mod P`` at row ``(w + prefix) div P``, so
every bank takes at most one write per cycle and the buffer always holds its candidates densely
from slot 0, in index order. After the pass the side holding the k-th element becomes the
candidate set (a 1-bit buffer swap, no copy). No sort ever happens: a pass costs
``ceil(c / P)`` cycles for ``c`` candidates, plus 2.

The first pass runs *while the scores load* (pivot: median of lanes 0, P/2, P-1 of beat 0).
Later pivots are sampled at an LFSR-chosen position of the candidate buffer (a 1-cycle read
overlapped with the pass start). When the pivot's ``==`` group holds the target rank, the pivot
is the k-th value, and the number of ``==`` elements that win (``quota``) is known. The emission
scan reads ``mem`` in index order, P per cycle, keeps ``x > kth`` and the first ``quota``
elements ``== kth`` (prefix count again), packs the row's winners into the low lanes of one
output beat and stops at the row of the k-th winner.

Ports
-----
``req`` (in): ``{n, k}``. ``s`` (in): ``{data: P signed scores}``, exactly ``ceil(n/P)``
beats per request (also for a bad request, whose scores are dropped). ``o`` (out): ``{kth,
error, count, last, idx[P]}`` (see the golden model). One request is handled at a time;
``req.ready`` is high only while the engine is idle.

Latency
-------
``ceil(n/P) + 2`` cycles to load (and run pass 1), ``ceil(c/P) + 2`` per later pass,
``last_winner_row + 3`` to emit. A bad request costs ``ceil(n/P) + 2`` (drain + error beat).
Worst case (every pass removes only the pivot) is bounded by
:func:`attnforge.golden.topk.cycle_bound`; the LFSR pivot makes that vanishingly rare for any
input not built against the LFSR sequence.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from ..golden.topk import LFSR_BITS, LFSR_SEED, LFSR_TAPS
from .unit import Choice, Formal, Param, Range, Ref, SimPoint, Unit

__all__ = ["TopK", "req_layout", "score_layout", "out_layout", "median3", "prefix_counts",
           "popcount", "lfsr_next"]

LANE_CHOICES = (1, 2, 4, 8, 16, 32)


def req_layout(max_n):
    """Request payload: ``n`` and ``k``, each wide enough to express ``n > max_n``."""
    bits = max_n.bit_length() + 1
    return data.StructLayout({"n": unsigned(bits), "k": unsigned(bits)})


def score_layout(width, lanes):
    """Score beat payload: P signed scores, lane 0 = lowest index."""
    return data.StructLayout({"data": data.ArrayLayout(signed(width), lanes)})


def out_layout(width, lanes, max_n):
    """Output beat payload (see :mod:`attnforge.golden.topk`)."""
    return data.StructLayout({
        "kth":   signed(width),
        "error": 1,
        "count": range(lanes + 1),
        "last":  1,
        "idx":   data.ArrayLayout(unsigned(max(ceil_log2(max_n), 1)), lanes),
    })


def median3(a, b, c):
    """Median of three signed values: ``max(min(a, b), min(max(a, b), c))``."""
    lo = Mux(a < b, a, b)
    hi = Mux(a < b, b, a)
    mid = Mux(hi < c, hi, c)
    return Mux(lo > mid, lo, mid)


def prefix_counts(bits):
    """Exclusive prefix counts of a list of 1-bit values: ``[0, b0, b0+b1, ...]``."""
    out, acc = [], Const(0, 1)
    for b in bits:
        out.append(acc)
        acc = acc + b
    return out


def popcount(bits):
    """Number of set bits among ``bits`` (a list of 1-bit values)."""
    acc = Const(0, 1)
    for b in bits:
        acc = acc + b
    return acc


def lfsr_next(state):
    """Next state of the 16-bit Galois LFSR of :func:`attnforge.golden.topk.lfsr_step`."""
    return Mux(state[0], (state >> 1) ^ LFSR_TAPS, state >> 1)



class _Emitter:
    """The emission scan shared by the engine and its baseline.

    ``x`` is the row ``d_row`` of the score store (valid when ``d_valid``), read through a
    synchronous port whose address the caller drives with the row counter and whose enable is
    :attr:`adv`. Keeps ``x > kth`` and the first ``quota`` of ``x == kth``, packs the row's winners
    into the low lanes of an output beat.
    """

    @staticmethod
    def state(W, CB, D):
        """The scan's registers, declared by the caller before the score store is read:
        ``(kth, quota, emitted, erow, d_valid, d_row)``."""
        kth = Signal(signed(W))
        quota = Signal(CB)
        emitted = Signal(CB)
        erow = Signal(range(D + 1))
        d_valid = Signal()
        d_row = Signal(range(D))
        return kth, quota, emitted, erow, d_valid, d_row

    def __init__(self, m, o, P, x, d_valid, d_row, n, k, kth, quota, emitted):
        LP = exact_log2(P)
        self.o, self.P = o, P
        self.d_valid, self.d_row, self.k, self.quota, self.emitted = d_valid, d_row, k, quota, emitted
        self.idx = [Cat(Const(j, LP), d_row) if LP else d_row for j in range(P)]
        inside = [d_valid & (self.idx[j] < n) for j in range(P)]
        gt = [inside[j] & (x[j] > kth) for j in range(P)]
        eq = [inside[j] & (x[j] == kth) for j in range(P)]
        self.take = [Signal(name=f"e_take{j}") for j in range(P)]
        for j, pe in enumerate(prefix_counts(eq)):
            m.d.comb += self.take[j].eq(gt[j] | (eq[j] & (pe < quota)))
        self.count = popcount(self.take)
        self.eq_taken = popcount([self.take[j] & eq[j] for j in range(P)])
        self.kth = kth
        self.o_free = ~o.valid | o.ready
        self.consume = Signal()
        m.d.comb += self.consume.eq(d_valid & ((self.count == 0) | self.o_free))
        self.adv = ~d_valid | self.consume
        # An accepted beat leaves `o`; the states that register a beat override this.
        with m.If(o.valid & o.ready):
            m.d.sync += o.valid.eq(0)

    def step(self, m, erow, rows):
        """Statements of one cycle of the scan (call inside the emitting state); returns the
        1-bit ``done`` (the last beat is being registered)."""
        o, P = self.o, self.P
        with m.If(self.adv):
            with m.If(erow < rows):
                m.d.sync += [erow.eq(erow + 1), self.d_valid.eq(1), self.d_row.eq(erow)]
            with m.Else():
                m.d.sync += self.d_valid.eq(0)
        done = Signal()
        with m.If(self.consume & (self.count != 0)):
            m.d.comb += done.eq(self.emitted + self.count == self.k)
            m.d.sync += [o.valid.eq(1), o.payload.kth.eq(self.kth), o.payload.error.eq(0),
                         o.payload.count.eq(self.count), o.payload.last.eq(done),
                         self.emitted.eq(self.emitted + self.count),
                         self.quota.eq(self.quota - self.eq_taken)]
            pfx = prefix_counts(self.take)
            for q in range(P):
                val = Const(0, 1)
                for j in range(q, P):
                    val = Mux(self.take[j] & (pfx[j] == q), self.idx[j], val)
                m.d.sync += o.payload.idx[q].eq(val)
            with m.If(done):
                m.d.sync += self.d_valid.eq(0)
        return done

class _Shell(wiring.Component):
    """Ports, parameters and request handling (check, drain, error beat) shared by the engine
    and its baseline; the emission scan is the shared :class:`_Emitter`."""

    def __init__(self, *, max_n=256, width=16, lanes=4):
        self.record.validate(max_n=max_n, width=width, lanes=lanes)
        self._lanes, self._max_n, self._width = lanes, max_n, width
        super().__init__({
            "req": In(stream.Signature(req_layout(max_n))),
            "s":   In(stream.Signature(score_layout(width, lanes))),
            "o":   Out(stream.Signature(out_layout(width, lanes, max_n))),
        })

    # Request handling shared by the engine and its baseline: each helper is the body of one
    # state of the caller's state machine; ``state`` is the caller's state register.

    def _accept(self, m, state, rows_left, latch, *, ok, drain, error):
        """Idle: take a request, latch its fields (``latch``: statements reading
        ``self.req.payload``), count its score beats into ``rows_left``, and go to ``ok``, or
        to ``drain`` (bad ``n`` or ``k``: its scores are dropped), or straight to ``error``
        (``n == 0``: no score beats follow)."""
        P, req = self._lanes, self.req.payload
        bad = (req.n == 0) | (req.n > self._max_n) | (req.k == 0) | (req.k > req.n)
        m.d.comb += self.req.ready.eq(1)
        with m.If(self.req.valid):
            m.d.sync += [*latch, rows_left.eq((req.n + (P - 1)) >> exact_log2(P))]
            with m.If(req.n == 0):
                m.d.sync += state.eq(error)
            with m.Elif(bad):
                m.d.sync += state.eq(drain)
            with m.Else():
                m.d.sync += state.eq(ok)

    def _drain(self, m, state, rows_left, *, done):
        """Drop the score beats of a bad request, then go to ``done``."""
        m.d.comb += self.s.ready.eq(1)
        with m.If(self.s.valid):
            m.d.sync += rows_left.eq(rows_left - 1)
            with m.If(rows_left == 1):
                m.d.sync += state.eq(done)

    def _error_beat(self, m, state, o_free, *, done):
        """Register the one error beat (``error``, ``last``, all else 0), then go to ``done``."""
        with m.If(o_free):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(0),
                         self.o.payload.error.eq(1), self.o.payload.last.eq(1)]
            m.d.sync += state.eq(done)

    @property
    def max_n(self):
        """Largest ``n`` a request may carry."""
        return self._max_n

    @property
    def width(self):
        """Score width in bits (signed)."""
        return self._width

    @property
    def lanes(self):
        """P: scores per beat and parallel comparators."""
        return self._lanes


class TopK(_Shell):
    """Top-k engine: quick-select over partition buffers, P comparators, run-time ``n``, ``k``.

    Parameters
    ----------
    max_n : int
        Largest number of scores per request, a multiple of ``lanes``, ``2*lanes .. 65536``
        (default 256). Sets the three memories (``3 * max_n`` scores).
    width : int
        Signed score width, 2..32 bits (default 16).
    lanes : int
        P, scores per beat and comparators per pass: 1, 2, 4, 8, 16 or 32 (default 4).

    Members
    -------
    req : ``In(stream.Signature(req_layout(max_n)))``
        One ``{n, k}`` per operation.
    s : ``In(stream.Signature(score_layout(width, lanes)))``
        ``ceil(n / lanes)`` beats of scores per request.
    o : ``Out(stream.Signature(out_layout(width, lanes, max_n)))``
        Winner beats (indices ascending, ``last`` on the final one) or one error beat.

    See the module docstring for the algorithm, timing and the design trick.
    """

    def elaborate(self, platform):
        m = Module()
        P, W, N = self._lanes, self._width, self._max_n
        LP = exact_log2(P)
        D = N // P
        CB = N.bit_length()                       # counts 0..max_n
        QB = CB + 1                               # request fields

        mem = [Memory(shape=signed(W), depth=D, init=[]) for _ in range(P)]
        buf = [[Memory(shape=signed(W), depth=D, init=[]) for _ in range(P)] for _ in range(2)]
        for j in range(P):
            m.submodules[f"mem{j}"] = mem[j]
            m.submodules[f"bufa{j}"] = buf[0][j]
            m.submodules[f"bufb{j}"] = buf[1][j]
        mem_w = [x.write_port() for x in mem]
        mem_r = [x.read_port(transparent_for=()) for x in mem]
        buf_w = [[x.write_port() for x in b] for b in buf]
        buf_r = [[x.read_port(transparent_for=()) for x in b] for b in buf]

        n = Signal(QB)
        k = Signal(QB)
        rows_left = Signal(QB)                    # score beats still to accept
        beat = Signal(range(D + 1))               # row the next score beat goes to
        r = Signal(CB)                            # target rank among the candidates
        c = Signal(CB)                            # candidates
        cur = Signal()                            # buffer holding the candidates
        pivot = Signal(signed(W))
        lfsr = Signal(LFSR_BITS, init=LFSR_SEED)
        gcount = Signal(CB)
        lcount = Signal(CB)
        ecount = Signal(CB)
        rd_row = Signal(range(D + 1))
        piv_lane = Signal(range(P))
        # Partition stage input (either the registered score beat or a buffer row).
        s1_valid = Signal()
        s1_data = Signal(data.ArrayLayout(signed(W), P))
        s1_mask = Signal(P)
        pv = Signal()                             # a buffer row arrives this cycle
        prow = Signal(range(D))
        # Emission.
        kth, quota, emitted, erow, d_valid, d_row = _Emitter.state(W, CB, D)

        # --- partition datapath -------------------------------------------------------------
        loading = Signal()
        part_valid = Signal()
        part_x = [Signal(signed(W), name=f"part_x{j}") for j in range(P)]
        part_m = Signal(P)
        rows_c = (c + (P - 1)) >> LP
        with m.If(loading):
            m.d.comb += part_valid.eq(s1_valid)
            m.d.comb += [part_x[j].eq(s1_data[j]) for j in range(P)]
            m.d.comb += part_m.eq(s1_mask)
        with m.Else():
            m.d.comb += part_valid.eq(pv)
            for j in range(P):
                m.d.comb += part_x[j].eq(Mux(cur, buf_r[1][j].data, buf_r[0][j].data))
                m.d.comb += part_m[j].eq(Cat(Const(j, LP), prow) < c)
        gt = [part_valid & part_m[j] & (part_x[j] > pivot) for j in range(P)]
        eq = [part_valid & part_m[j] & (part_x[j] == pivot) for j in range(P)]
        lt = [part_valid & part_m[j] & (part_x[j] < pivot) for j in range(P)]
        for b in range(2):
            mine = cur == b                       # G goes back into the buffer being read
            mask = [Mux(mine, g, l) for g, l in zip(gt, lt)]
            base = Mux(mine, gcount, lcount)
            pos = [Signal(CB + 1, name=f"pos{b}_{j}") for j in range(P)]
            for j, p in enumerate(prefix_counts(mask)):
                m.d.comb += pos[j].eq(base + p)
            for q in range(P):
                port = buf_w[b][q]
                for j in range(P):
                    hit = mask[j] & (pos[j][:LP] == q) if LP else mask[j]
                    with m.If(hit):
                        m.d.comb += [port.en.eq(1), port.data.eq(part_x[j]),
                                     port.addr.eq(pos[j][LP:])]
        m.d.sync += [gcount.eq(gcount + popcount(gt)), lcount.eq(lcount + popcount(lt)),
                     ecount.eq(ecount + popcount(eq))]

        # Buffer reads (both buffers get the same address; `cur` picks the data).
        rd_addr = Signal(range(D))
        for b in range(2):
            for j in range(P):
                m.d.comb += [buf_r[b][j].addr.eq(rd_addr), buf_r[b][j].en.eq(1)]

        # Score memory writes while loading.
        take_s = self.s.valid & self.s.ready
        for j in range(P):
            m.d.comb += [mem_w[j].addr.eq(beat), mem_w[j].data.eq(self.s.payload.data[j]),
                         mem_w[j].en.eq(take_s & (beat < D))]

        # --- emission datapath --------------------------------------------------------------
        em = _Emitter(m, self.o, P, [mem_r[j].data for j in range(P)], d_valid, d_row, n, k,
                      kth, quota, emitted)
        o_free = em.o_free
        m.d.comb += [mem_r[j].addr.eq(erow) for j in range(P)]
        m.d.comb += [mem_r[j].en.eq(em.adv) for j in range(P)]

        # --- control ------------------------------------------------------------------------
        beat0 = self.s.payload.data
        if P >= 2:
            pivot1 = Mux(n >= P, median3(beat0[0], beat0[P // 2], beat0[P - 1]), beat0[0])
        else:
            pivot1 = beat0[0]

        new_c = Signal(CB)
        new_cur = Signal()
        # Control: a plain state register (if/elif, so the Verilog has no incomplete case).
        IDLE, DRAIN, ERROR, LOAD, LOADED, DECIDE, PIVOT, PASS, EMIT = range(9)
        state = Signal(range(9))
        if True:
            with m.If(state == IDLE):
                req = self.req.payload
                self._accept(m, state, rows_left,
                             [n.eq(req.n), k.eq(req.k), r.eq(req.k), c.eq(req.n), beat.eq(0),
                              cur.eq(0), lfsr.eq(LFSR_SEED), gcount.eq(0), lcount.eq(0),
                              ecount.eq(0), s1_valid.eq(0)],
                             ok=LOAD, drain=DRAIN, error=ERROR)
            with m.Elif(state == DRAIN):
                self._drain(m, state, rows_left, done=ERROR)
            with m.Elif(state == ERROR):
                self._error_beat(m, state, o_free, done=IDLE)
            with m.Elif(state == LOAD):
                m.d.comb += [loading.eq(1), self.s.ready.eq(1)]
                m.d.sync += s1_valid.eq(self.s.valid)
                with m.If(self.s.valid):
                    m.d.sync += [s1_data.eq(beat0), beat.eq(beat + 1),
                                 rows_left.eq(rows_left - 1)]
                    base = Cat(Const(0, LP), beat) if LP else beat
                    m.d.sync += [s1_mask[j].eq(base + j < n) for j in range(P)]
                    with m.If(beat == 0):
                        m.d.sync += pivot.eq(pivot1)
                    with m.If(rows_left == 1):
                        m.d.sync += state.eq(LOADED)
            with m.Elif(state == LOADED):
                m.d.comb += loading.eq(1)          # partition the last beat
                m.d.sync += s1_valid.eq(0)
                m.d.sync += state.eq(DECIDE)
            with m.Elif(state == DECIDE):
                g, e = gcount, ecount
                with m.If(r <= g):
                    m.d.comb += [new_c.eq(g), new_cur.eq(cur)]
                with m.Else():
                    m.d.comb += [new_c.eq(lcount), new_cur.eq(~cur)]
                    m.d.sync += r.eq(r - g - e)
                step = lfsr_next(lfsr)
                sample = (step * new_c) >> LFSR_BITS
                m.d.comb += rd_addr.eq(sample >> LP)
                m.d.sync += [lfsr.eq(step), c.eq(new_c), cur.eq(new_cur), piv_lane.eq(sample),
                             gcount.eq(0), lcount.eq(0), ecount.eq(0), rd_row.eq(1)]
                with m.If((r > g) & (r <= g + e)):
                    m.d.sync += [kth.eq(pivot), quota.eq(r - g), emitted.eq(0), erow.eq(0),
                                 d_valid.eq(0), cur.eq(cur), r.eq(r)]
                    m.d.sync += state.eq(EMIT)
                with m.Else():
                    m.d.sync += state.eq(PIVOT)
            with m.Elif(state == PIVOT):
                lanes_data = [Mux(cur, buf_r[1][j].data, buf_r[0][j].data) for j in range(P)]
                sel = lanes_data[0]
                for j in range(1, P):
                    sel = Mux(piv_lane == j, lanes_data[j], sel)
                m.d.sync += [pivot.eq(sel), pv.eq(1), prow.eq(0)]
                m.d.comb += rd_addr.eq(0)
                m.d.sync += state.eq(PASS)
            with m.Elif(state == PASS):
                m.d.comb += rd_addr.eq(rd_row)
                with m.If(rd_row < rows_c):
                    m.d.sync += [rd_row.eq(rd_row + 1), pv.eq(1), prow.eq(rd_row)]
                with m.Else():
                    m.d.sync += pv.eq(0)
                with m.If(pv & (prow == rows_c - 1)):
                    m.d.sync += pv.eq(0)
                    m.d.sync += state.eq(DECIDE)
            with m.Elif(state == EMIT):
                with m.If(em.step(m, erow, (n + (P - 1)) >> LP)):
                    m.d.sync += state.eq(IDLE)
        return m


UNIT = Unit(
    "topk", TopK, "top-k engine: quick-select, P comparators, run-time n and k",
    (Param("lanes", Choice(LANE_CHOICES), "P: scores per beat and comparators"),
     Param("max_n", Range(Ref("2 * lanes", lambda p: 2 * p["lanes"]), 1 << 16,
                          multiple_of="lanes"), "largest n of a request"),
     Param("width", Range(2, 32), "signed score width")),
    sim=(SimPoint({"max_n": 32, "width": 8, "lanes": 4}),
         SimPoint({"max_n": 64, "width": 16, "lanes": 16})),
    formal=Formal(cover_depth=12))
