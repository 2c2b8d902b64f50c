"""Building blocks shared by the top-k engines (``topk``, ``topk_quickselect``, ``topk_bitonic``).

Every block with ports is a ``wiring.Component`` whose signature is computed from its
parameters; the engines instantiate them as submodules and join the streams with
``wiring.connect``.

* :class:`TopKShell` -- the ports, parameters and properties every engine shares (``req``,
  ``s``, ``o``); an engine subclasses it and writes only its selection.
* :class:`RowIntake` -- request handshake, request check, score-row consumption and row check
  (``count``/``last`` against ``n``); hands the engine one beat per cycle and a ``done`` pulse.
* :class:`Compactor` -- writes the kept lanes of a beat densely (in index order) into P memory
  banks: prefix count + rotate, one write per bank per cycle.
* :class:`RowScan` -- one pass over the candidate rows (read address, row valid one cycle
  later, done on the last row): the pass state of the radix-select and quick-select engines.
* :class:`DigitHistogram` -- 2**R counters incremented by the lanes whose digit matches.
* :class:`RankFinder` -- which histogram bucket holds rank ``r`` (1 = largest), and how many
  elements lie above it.
* :class:`WinnerEmitter` -- the emission scan (score memory in index order, keep ``x > kth``
  and the first ``quota`` of ``x == kth``) and the error beat, driving ``o``.

Stream conventions (:mod:`attnforge.rtl.streams`): ``s`` is a row stream of scores (``data``,
``count``, ``last``, ``error``), ``o`` a row stream of winners (``index``, ``data``, ``count``,
``last``, ``error`` + extra ``kth``).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from ..golden.topk import LFSR_TAPS
from .streams import RowLayout

__all__ = ["PER_BEAT_CHOICES", "req_layout", "score_layout", "out_layout", "index_bits", "count_bits",
           "median3", "prefix_counts", "popcount", "lfsr_next", "TopKShell", "RowIntake",
           "Compactor", "RowScan", "DigitHistogram", "RankFinder", "WinnerEmitter", "or_tree"]

PER_BEAT_CHOICES = (1, 2, 4, 8, 16, 32)


def index_bits(max_n):
    """Width of an element index (``0 .. max_n-1``)."""
    return max(ceil_log2(max_n), 1)


def count_bits(max_n):
    """Width of a count ``0 .. max_n``."""
    return max_n.bit_length()


def req_layout(max_n):
    """Request payload: ``n`` and ``k``, each wide enough to express ``n > max_n``."""
    bits = max_n.bit_length() + 1
    return data.StructLayout({"n": unsigned(bits), "k": unsigned(bits)})


def score_layout(score_bits, per_beat):
    """Score row payload: ``data[P]`` (signed), ``count``, ``last``, ``error``."""
    return RowLayout(per_beat, signed(score_bits))


def out_layout(score_bits, per_beat, max_n):
    """Winner row payload: ``data[P]`` (winners' scores), ``index[P]``, ``count``, ``last``,
    ``error`` and the extra field ``kth`` (the k-th largest score)."""
    return RowLayout(per_beat, signed(score_bits), index_bits(max_n),
                     extra={"kth": signed(score_bits)})


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


class TopKShell(wiring.Component):
    """Ports, parameters and properties every top-k engine shares.

    ``req``: ``In(stream.Signature(req_layout(max_n)))``; ``s``: ``In`` row stream of
    ``score_layout``; ``o``: ``Out`` row stream of ``out_layout``. Subclasses set ``record``
    (their unit record) and may add keyword parameters (``extra``)."""

    def __init__(self, *, max_n, score_bits, per_beat, **extra):
        self.record.validate(max_n=max_n, score_bits=score_bits, per_beat=per_beat, **extra)
        self._per_beat, self._max_n, self._score_bits = per_beat, max_n, score_bits
        super().__init__({
            "req": In(stream.Signature(req_layout(max_n))),
            "s":   In(stream.Signature(score_layout(score_bits, per_beat))),
            "o":   Out(stream.Signature(out_layout(score_bits, per_beat, max_n))),
        })

    def intake_and_emitter(self, m):
        """Add the shared :class:`RowIntake` and :class:`WinnerEmitter` as submodules, joined to
        ``req``, ``s`` and ``o``; returns ``(intake, emitter)``."""
        P, W, N = self._per_beat, self._score_bits, self._max_n
        m.submodules.intake = intake = RowIntake(max_n=N, score_bits=W, per_beat=P)
        m.submodules.emitter = em = WinnerEmitter(max_n=N, score_bits=W, per_beat=P)
        wiring.connect(m, wiring.flipped(self.req), intake.req)
        wiring.connect(m, wiring.flipped(self.s), intake.s)
        wiring.connect(m, wiring.flipped(self.o), em.o)
        m.d.comb += [em.n.eq(intake.n), em.k.eq(intake.k)]
        return intake, em

    @property
    def max_n(self):
        """Largest ``n`` a request may carry."""
        return self._max_n

    @property
    def score_bits(self):
        """Score width in bits (signed)."""
        return self._score_bits

    @property
    def per_beat(self):
        """P: scores per beat (and comparators per pass)."""
        return self._per_beat


class RowIntake(wiring.Component):
    """Request handshake and score-row consumption, shared by every engine.

    ``req`` is ready while ``free`` (the engine is idle) and no row is being read. A taken
    request is latched (``n``, ``k``, ``rows = ceil(n/P)``; ``start`` pulses in the handshake
    cycle), then ``s`` is always ready until the beat with ``last``. Every good beat of a good
    request appears on ``beat_valid`` / ``beat_row`` / ``beat_data`` / ``beat_mask`` (lanes
    below ``n``) in its handshake cycle; beats past ``rows`` are dropped. The last beat's cycle
    pulses ``done`` with ``error`` = the request is bad or the row is malformed (counts not
    adding up to ``n``, a short beat before ``last``, or a beat flagged ``error``).
    """

    def __init__(self, *, max_n, score_bits, per_beat):
        self._P, self._N, self._W = per_beat, max_n, score_bits
        QB = max_n.bit_length() + 1
        super().__init__({
            "req": In(stream.Signature(req_layout(max_n))),
            "s": In(stream.Signature(score_layout(score_bits, per_beat))),
            "free": In(1),
            "start": Out(1),
            "n": Out(QB), "k": Out(QB), "rows": Out(QB),
            "beat_valid": Out(1),
            "beat_row": Out(range(max(max_n // per_beat, 2))),
            "beat_data": Out(data.ArrayLayout(signed(score_bits), per_beat)),
            "beat_mask": Out(per_beat),
            "done": Out(1), "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        P, N = self._P, self._N
        LP = exact_log2(P)
        D = N // P
        QB = N.bit_length() + 1
        busy = Signal()
        bad = Signal()                         # request bad or row malformed so far
        got = Signal(QB + 1)                   # elements received
        row = Signal(QB)
        req = self.req.payload
        m.d.comb += self.req.ready.eq(self.free & ~busy)
        with m.If(self.req.valid & self.req.ready):
            m.d.comb += self.start.eq(1)
            m.d.sync += [self.n.eq(req.n), self.k.eq(req.k), busy.eq(1), got.eq(0), row.eq(0),
                         self.rows.eq((req.n + (P - 1)) >> LP),
                         bad.eq((req.n == 0) | (req.n > N) | (req.k == 0) | (req.k > req.n))]
        s = self.s.payload
        m.d.comb += self.s.ready.eq(busy)
        take = self.s.valid & busy
        short = ~s.last & (s.count != P)
        m.d.comb += [self.beat_row.eq(row[:len(self.beat_row)]), self.beat_data.eq(s.data)]
        base = Cat(Const(0, LP), row) if LP else row
        m.d.comb += [self.beat_mask[j].eq(base + j < self.n) for j in range(P)]
        m.d.comb += self.beat_valid.eq(take & ~bad & (row < self.rows) & (row < D))
        with m.If(take):
            m.d.sync += [got.eq(got + s.count), row.eq(row + 1)]
            with m.If(short | s.error):
                m.d.sync += bad.eq(1)
            with m.If(s.last):
                m.d.sync += busy.eq(0)
                m.d.comb += [self.done.eq(1),
                             self.error.eq(bad | short | s.error | (got + s.count != self.n))]
        return m


class Compactor(wiring.Component):
    """Writes the ``keep`` lanes of ``x`` densely, in lane order, into P banks of a memory.

    Element number ``count + prefix`` lands in bank ``(count + prefix) mod P`` at row
    ``(count + prefix) div P`` (so each bank takes at most one write per cycle); ``count``
    (the write pointer, elements so far) then grows by the number kept. ``clear`` (priority)
    restarts at 0. Ports ``we[P]``, ``addr[P]``, ``wdata[P]`` drive the banks' write ports.
    Writing in place into the memory being read is safe: the write pointer never passes the
    read pointer."""

    def __init__(self, *, max_n, score_bits, per_beat):
        self._P, self._N = per_beat, max_n
        D = max_n // per_beat
        super().__init__({
            "valid": In(1), "clear": In(1),
            "x": In(data.ArrayLayout(signed(score_bits), per_beat)),
            "keep": In(per_beat),
            "count": Out(count_bits(max_n) + 1),
            "we": Out(per_beat),
            "addr": Out(data.ArrayLayout(range(max(D, 2)), per_beat)),
            "wdata": Out(data.ArrayLayout(signed(score_bits), per_beat)),
        })

    def elaborate(self, platform):
        m = Module()
        P = self._P
        LP = exact_log2(P)
        keep = [self.valid & self.keep[j] for j in range(P)]
        pos = [Signal(len(self.count), name=f"pos{j}") for j in range(P)]
        for j, p in enumerate(prefix_counts(keep)):
            m.d.comb += pos[j].eq(self.count + p)
        for q in range(P):
            for j in range(P):
                hit = keep[j] & (pos[j][:LP] == q) if LP else keep[j]
                with m.If(hit):
                    m.d.comb += [self.we[q].eq(1), self.wdata[q].eq(self.x[j]),
                                 self.addr[q].eq(pos[j][LP:])]
        with m.If(self.clear):
            m.d.sync += self.count.eq(0)
        with m.Else():
            m.d.sync += self.count.eq(self.count + popcount(keep))
        return m


class RowScan(wiring.Component):
    """One pass over the candidate rows of P-bank memories: rows ``0 .. rows-1``, one per cycle.

    ``start`` (while idle) reads row 0 (``addr`` 0 in that cycle); from the next cycle the scan
    is ``busy`` and reads row ``i + 1`` while row ``i``'s read data arrive (``valid``, ``row``:
    synchronous read ports, one cycle). ``done`` marks the cycle the last row arrives; the scan
    is idle after it. ``rows`` must hold still during the scan and be at least 1. ``addr`` is 0
    while idle (an engine may read other rows then).
    """

    def __init__(self, *, max_n, per_beat):
        D = max_n // per_beat
        super().__init__({
            "start": In(1),
            "rows":  In(count_bits(max_n) + 1),
            "addr":  Out(range(max(D, 2))),
            "valid": Out(1),
            "row":   Out(range(max(D, 2))),
            "busy":  Out(1),
            "done":  Out(1),
        })
        self._D = D

    def elaborate(self, platform):
        m = Module()
        next_row = Signal(range(self._D + 1))     # the row read in this cycle while busy
        m.d.comb += [self.addr.eq(Mux(self.busy, next_row, 0)),
                     self.done.eq(self.valid & (self.row == self.rows - 1))]
        with m.If(self.start & ~self.busy):
            m.d.sync += [next_row.eq(1), self.valid.eq(1), self.row.eq(0), self.busy.eq(1)]
        with m.Elif(self.busy):
            with m.If(next_row < self.rows):
                m.d.sync += [next_row.eq(next_row + 1), self.valid.eq(1), self.row.eq(next_row)]
            with m.Else():
                m.d.sync += self.valid.eq(0)
            with m.If(self.done):
                m.d.sync += [self.valid.eq(0), self.busy.eq(0)]
        return m


class DigitHistogram(wiring.Component):
    """``2**digit_bits`` counters; each cycle with ``valid``, counter ``b`` grows by the number
    of lanes ``j`` with ``mask[j]`` and ``digit[j] == b``. ``clear`` (priority) zeroes them."""

    def __init__(self, *, max_n, per_beat, digit_bits):
        self._P, self._R = per_beat, digit_bits
        super().__init__({
            "valid": In(1), "clear": In(1),
            "digit": In(data.ArrayLayout(unsigned(digit_bits), per_beat)),
            "mask": In(per_beat),
            "counts": Out(data.ArrayLayout(unsigned(count_bits(max_n)), 1 << digit_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        for b in range(1 << self._R):
            inc = popcount([self.valid & self.mask[j] & (self.digit[j] == b)
                            for j in range(self._P)])
            with m.If(self.clear):
                m.d.sync += self.counts[b].eq(0)
            with m.Else():
                m.d.sync += self.counts[b].eq(self.counts[b] + inc)
        return m


def or_tree(values):
    """Bitwise OR of a list of values, as a balanced tree (logic depth log2 of the count)."""
    values = list(values)
    while len(values) > 1:
        values = [values[i] | values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


class RankFinder(wiring.Component):
    """Combinational: for each of ``ranks`` queries ``rank[i]`` (1 = largest), the bucket
    ``bucket[i]`` of the histogram ``counts`` that holds it and ``above[i]``, the count in
    higher buckets. A rank past the total gives bucket 0 (``above`` is then meaningless).

    The suffix sums are computed once for all queries, in two levels (within groups of
    ``2**ceil(R/2)`` buckets, then across groups: ``~2 * 2**(R/2)`` adders deep instead of
    ``2**R``), and the one matching bucket is selected by an OR tree, so the logic depth (and
    the SMT export's recursion) stays small at R = 8."""

    def __init__(self, *, max_n, digit_bits, ranks=1):
        self._R, self._ranks = digit_bits, ranks
        CB = count_bits(max_n)
        super().__init__({
            "counts": In(data.ArrayLayout(unsigned(CB), 1 << digit_bits)),
            "rank": In(data.ArrayLayout(unsigned(CB + 2), ranks)),
            "bucket": Out(data.ArrayLayout(unsigned(digit_bits), ranks)),
            "above": Out(data.ArrayLayout(unsigned(CB + 1), ranks)),
        })

    def elaborate(self, platform):
        m = Module()
        R = self._R
        B = 1 << R
        G = 1 << ((R + 1) // 2)                 # buckets per group
        width = len(self.above[0])
        local = [None] * B                      # count above b within its group
        gsum = []                               # total of each group
        for g0 in range(0, B, G):
            acc = Const(0, 1)
            for b in reversed(range(g0, g0 + G)):
                s = Signal(width, name=f"local{b}")
                m.d.comb += s.eq(acc)
                local[b] = s
                acc = s + self.counts[b]
            t = Signal(width, name=f"group{g0 // G}")
            m.d.comb += t.eq(acc)
            gsum.append(t)
        gabove = [None] * len(gsum)             # count in higher groups
        acc = Const(0, 1)
        for g in reversed(range(len(gsum))):
            s = Signal(width, name=f"gabove{g}")
            m.d.comb += s.eq(acc)
            gabove[g] = s
            acc = s + gsum[g]
        above = []
        for b in range(B):
            s = Signal(width, name=f"above{b}")
            m.d.comb += s.eq(gabove[b // G] + local[b])
            above.append(s)
        for i in range(self._ranks):
            r = self.rank[i]
            hit = [Signal(name=f"hit{i}_{b}") for b in range(B)]
            for b in range(B):                  # exactly one bucket matches when r <= total
                m.d.comb += hit[b].eq((above[b] < r) & (r <= above[b] + self.counts[b]))
            m.d.comb += [self.bucket[i].eq(or_tree([Mux(hit[b], b, 0) for b in range(B)])),
                         self.above[i].eq(or_tree([Mux(hit[b], above[b], 0)
                                                   for b in range(B)]))]
        return m


class WinnerEmitter(wiring.Component):
    """The emission scan and the error beat, driving ``o`` (shared by every engine).

    ``start`` (with ``kth`` and ``quota``; ``n``, ``k`` held by the engine) begins a scan of the
    score store: the emitter drives ``addr`` / ``en`` of a synchronous read port whose data
    ``rdata`` arrives one cycle later, keeps ``x > kth`` and the first ``quota`` of
    ``x == kth``, packs a row's winners into the low lanes of one beat (indices and scores)
    and stops after the beat with the k-th winner. ``start_error`` registers the one error beat
    instead. ``busy`` is high from the cycle after a start until the last beat is registered.
    Output back-pressure freezes the scan (``en`` low). Timing: a row read in cycle ``t``
    leaves on ``o`` in cycle ``t + 2``."""

    def __init__(self, *, max_n, score_bits, per_beat):
        self._P, self._N, self._W = per_beat, max_n, score_bits
        D = max_n // per_beat
        QB = max_n.bit_length() + 1
        super().__init__({
            "o": Out(stream.Signature(out_layout(score_bits, per_beat, max_n))),
            "start": In(1), "start_error": In(1),
            "n": In(QB), "k": In(QB),
            "kth": In(signed(score_bits)), "quota": In(QB),
            "addr": Out(range(max(D, 2))), "en": Out(1),
            "rdata": In(data.ArrayLayout(signed(score_bits), per_beat)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        P, W, N = self._P, self._W, self._N
        LP = exact_log2(P)
        D = N // P
        QB = N.bit_length() + 1
        o = self.o
        kth = Signal(signed(W))
        quota = Signal(QB)
        emitted = Signal(QB)
        erow = Signal(range(D + 1))
        rows = Signal(QB)
        d_valid = Signal()
        d_row = Signal(range(max(D, 2)))
        x = self.rdata
        idx = [Cat(Const(j, LP), d_row) if LP else d_row for j in range(P)]
        inside = [d_valid & (idx[j] < self.n) for j in range(P)]
        gt = [inside[j] & (x[j] > kth) for j in range(P)]
        eq = [inside[j] & (x[j] == kth) for j in range(P)]
        take = [Signal(name=f"take{j}") for j in range(P)]
        for j, pe in enumerate(prefix_counts(eq)):
            m.d.comb += take[j].eq(gt[j] | (eq[j] & (pe < quota)))
        count = popcount(take)
        o_free = ~o.valid | o.ready
        consume = d_valid & ((count == 0) | o_free)
        adv = self.busy & (~d_valid | consume)
        m.d.comb += [self.addr.eq(erow), self.en.eq(adv)]
        with m.If(o.valid & o.ready):
            m.d.sync += o.valid.eq(0)
        with m.If(self.start):
            m.d.sync += [kth.eq(self.kth), quota.eq(self.quota), emitted.eq(0), erow.eq(0),
                         d_valid.eq(0), self.busy.eq(1),
                         rows.eq((self.n + (P - 1)) >> LP)]
        with m.Elif(self.start_error):
            # one beat: error, last, all else 0 (the engine holds start_error until o is free)
            with m.If(o_free):
                m.d.sync += [o.valid.eq(1), o.payload.eq(0), o.payload.error.eq(1),
                             o.payload.last.eq(1)]
        with m.Elif(self.busy):
            with m.If(adv):
                with m.If(erow < rows):
                    m.d.sync += [erow.eq(erow + 1), d_valid.eq(1), d_row.eq(erow)]
                with m.Else():
                    m.d.sync += d_valid.eq(0)
            with m.If(consume & (count != 0)):
                done = emitted + count == self.k
                m.d.sync += [o.valid.eq(1), o.payload.kth.eq(kth), o.payload.error.eq(0),
                             o.payload.count.eq(count), o.payload.last.eq(done),
                             emitted.eq(emitted + count),
                             quota.eq(quota - popcount([take[j] & eq[j] for j in range(P)]))]
                pfx = prefix_counts(take)
                for q in range(P):
                    vi, vd = Const(0, 1), Const(0, 1)
                    for j in range(q, P):
                        sel = take[j] & (pfx[j] == q)
                        vi = Mux(sel, idx[j], vi)
                        vd = Mux(sel, x[j], vd)
                    m.d.sync += [o.payload.index[q].eq(vi), o.payload.data[q].eq(vd)]
                with m.If(done):
                    m.d.sync += [d_valid.eq(0), self.busy.eq(0)]
        return m

    @property
    def start_error_done(self):
        """1 when a held ``start_error`` registers its beat this cycle."""
        return ~self.o.valid | self.o.ready
