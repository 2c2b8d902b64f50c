"""Top-k engine (DESIGN.md section 4.4, issue 12): radix select with a sampled bracket, P lanes,
run-time ``n`` and ``k``, winners' indices (and scores) in ascending index order.

The contract (which beats leave, every bit of them) and the exact cycle count are
:mod:`attnforge.golden.topk` (:func:`~attnforge.golden.topk.radix_select`,
:meth:`~attnforge.golden.topk.TopKModel.cycles`, matched exactly by this RTL).

Design
------
Scores are compared as unsigned keys (sign bit flipped), split into digits of ``digit_bits``
(R) from the top. Two banked memories of ``max_n`` scores (P banks of ``max_n/P`` rows):
``mem`` (the scores as they arrive, read again by the emission scan and by a bracket miss) and
``buf`` (the candidates, compacted in index order by a :class:`~.topk_parts.Compactor`).

* **Load** (one beat per cycle): each beat is written to ``mem``, counted into the digit-1
  :class:`~.topk_parts.DigitHistogram`, and copied to ``buf`` if it belongs to the *sample*
  (rows ``0 .. S``, ``S = max(1, rows >> 3)``) or its digit 1 lies in the *bracket*. The
  bracket is computed once, the cycle after row ``S - 1`` was counted: the
  :class:`~.topk_parts.RankFinder` names the buckets of the sample ranks around ``k/8``
  (:func:`attnforge.golden.topk.bracket_ranks`).
* **Decide** (one cycle): the rank finder names the bucket of the target rank in the current
  histogram and the count above it; that fixes one more digit of the k-th value.
* **Pass** ``j`` (``ceil(c/P)`` rows + 1 cycle): reads the candidates (``buf``; ``mem`` on a
  bracket miss in pass 1), keeps those whose digit ``j`` is the chosen one (compacted in place
  into ``buf``) and histograms their digit ``j + 1``. ``ceil(score_bits / R) - 1`` passes.
* **Emit**: the shared :class:`~.topk_parts.WinnerEmitter` scans ``mem`` up to the last winner.

Ports, request check, row check and error beat: :class:`~.topk_parts.TopKShell`,
:class:`~.topk_parts.RowIntake`.

Latency
-------
``ceil(n/P) + 2`` to load, ``rows + 1`` per pass (``rows`` = candidate rows; all ``n/P`` on a
bracket miss), ``last_winner_row + 3`` to emit; a bad request or row costs ``ceil(n/P) + 2``.
Worst case :func:`attnforge.golden.topk.cycle_bound` (no randomness: the count is a function of
the request).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data
from amaranth.lib.memory import Memory
from amaranth.utils import exact_log2

from ..golden.topk import MARGIN, MARGIN_SHIFT, SAMPLE_SHIFT, digit_slices
from .topk_parts import (PER_BEAT_CHOICES, Compactor, DigitHistogram, RankFinder, RowScan,
                         TopKShell, count_bits)
from .unit import Choice, Formal, Param, Range, Ref, SimPoint, Synth, Unit

__all__ = ["TopK"]


def banked(m, name, P, D, W):
    """P single-write, single-read memories of ``D`` signed ``W``-bit rows; returns
    ``(write_ports, read_ports)``."""
    mems = [Memory(shape=signed(W), depth=D, init=[]) for _ in range(P)]
    for j, x in enumerate(mems):
        m.submodules[f"{name}{j}"] = x
    return [x.write_port() for x in mems], [x.read_port(transparent_for=()) for x in mems]


class TopK(TopKShell):
    """Top-k engine: radix select with a sampled bracket (see the module docstring).

    Parameters
    ----------
    max_n : int
        Largest number of scores per request, a multiple of ``per_beat`` (default 256).
    score_bits : int
        Signed score width, 2..32 bits (default 16).
    per_beat : int
        P, scores per beat and lanes per pass: 1, 2, 4, 8, 16 or 32 (default 4).
    digit_bits : int
        R, radix digit width, 2..8 (default 8): ``2**R`` histogram counters, ``ceil(W/R) - 1``
        passes after the load (one for 16-bit scores).
    """

    def __init__(self, *, max_n=256, score_bits=16, per_beat=4, digit_bits=8):
        self._R = digit_bits
        super().__init__(max_n=max_n, score_bits=score_bits, per_beat=per_beat,
                         digit_bits=digit_bits)

    @property
    def digit_bits(self):
        """R: radix digit width."""
        return self._R

    @property
    def latency(self):
        """Cycles of the shortest request (``n = k = 1``), request handshake to the handshake
        of its one output beat: load ``1 + 2``, each pass ``1 + 1``, emission ``1 + 2``.
        Longer requests: :meth:`attnforge.golden.topk.TopKModel.cycles`."""
        passes = len(digit_slices(self._score_bits, self._R)) - 1
        return 3 + 2 * passes + 3

    def elaborate(self, platform):
        m = Module()
        P, W, N, R = self._per_beat, self._score_bits, self._max_n, self._R
        LP = exact_log2(P)
        D = N // P
        CB = count_bits(N)
        QB = CB + 1
        digits = digit_slices(W, R)
        ND = len(digits)
        intake, em = self.intake_and_emitter(m)
        m.submodules.hist = hist = DigitHistogram(max_n=N, per_beat=P, digit_bits=R)
        m.submodules.finder = finder = RankFinder(max_n=N, digit_bits=R, ranks=2)
        m.submodules.compact = comp = Compactor(max_n=N, score_bits=W, per_beat=P)
        m.submodules.scan = scan = RowScan(max_n=N, per_beat=P)
        mem_w, mem_r = banked(m, "mem", P, D, W)
        buf_w, buf_r = banked(m, "buf", P, D, W)
        m.d.comb += finder.counts.eq(hist.counts)

        IDLE, LOAD, LOADED, ERROR, DECIDE, PASS, EMIT = range(7)
        state = Signal(range(7))
        loading = (state == LOAD) | (state == LOADED)

        def key(x):
            return Cat(x[:W - 1], ~x[W - 1])

        def digit(x, idx):
            """Digit number ``idx`` (run-time) of the key of ``x``."""
            k = key(x)
            out = Const(0, R)
            for i, (shift, bits) in enumerate(digits):
                out = Mux(idx == i, k[shift:shift + bits], out)
            return out

        # --- load stage: the beat registered in s1, partitioned one cycle later ---------------
        s1_valid = Signal()
        s1_data = Signal(data.ArrayLayout(signed(W), P))
        s1_mask = Signal(P)
        s1_row = Signal(range(max(D, 2)))
        for j in range(P):
            m.d.comb += [mem_w[j].addr.eq(intake.beat_row), mem_w[j].data.eq(intake.beat_data[j]),
                         mem_w[j].en.eq(intake.beat_valid)]
        sample = Signal(QB)                       # S = max(1, rows >> SAMPLE_SHIFT)
        m.d.comb += sample.eq(Mux((intake.rows >> SAMPLE_SHIFT) == 0, 1,
                                  intake.rows >> SAMPLE_SHIFT))
        mid = Signal(QB)                          # bracket_ranks(k, m) of the golden model
        m_s = Signal(QB + LP)
        margin = Signal(QB)
        m.d.comb += [mid.eq((intake.k >> SAMPLE_SHIFT) + 1),
                     m_s.eq(Mux((sample << LP) < intake.n, sample << LP, intake.n)),
                     margin.eq(MARGIN + (Mux(m_s > mid, Mux(mid < m_s - mid, mid, m_s - mid), 0)
                                         >> MARGIN_SHIFT))]
        arm = Signal()                            # the sample is counted: compute the bracket
        use_br = Signal()                         # the bracket filters the copies
        blo = Signal(R)
        bhi = Signal(R)

        # --- pass stage ---------------------------------------------------------------------
        pv, prow, rd_addr = scan.valid, scan.row, scan.addr   # a candidate row arrives
        prows = Signal(QB)                        # rows of this pass
        m.d.comb += scan.rows.eq(prows)
        lim = Signal(QB)                          # candidates of this pass
        src_mem = Signal()                        # this pass reads mem (bracket miss)
        lvl = Signal(range(ND + 1))               # digit filtered by this pass
        hd = Signal(range(ND + 1))                # digit the histogram counts
        bsel = Signal(R)                          # chosen value of digit `lvl`
        r = Signal(QB)                            # target rank among the candidates
        kkey = Signal(W)                          # digits of the k-th key chosen so far

        part_valid = Signal()
        part_x = Signal(data.ArrayLayout(signed(W), P))
        part_m = Signal(P)
        keep = Signal(P)
        count_m = Signal(P)
        with m.If(loading):
            m.d.comb += [part_valid.eq(s1_valid), part_x.eq(s1_data), part_m.eq(s1_mask)]
            for j in range(P):
                d0 = digit(s1_data[j], 0)
                inside = (d0 >= blo) & (d0 <= bhi)
                m.d.comb += [keep[j].eq(s1_mask[j] & (~use_br | inside)),
                             count_m[j].eq(s1_mask[j])]
        with m.Else():
            m.d.comb += part_valid.eq(pv)
            for j in range(P):
                x = Mux(src_mem, mem_r[j].data, buf_r[j].data)
                match = digit(x, lvl) == bsel
                m.d.comb += [part_x[j].eq(x), part_m[j].eq(Cat(Const(j, LP), prow) < lim),
                             keep[j].eq(part_m[j] & match), count_m[j].eq(part_m[j] & match)]
        m.d.comb += [comp.valid.eq(part_valid), comp.x.eq(part_x), comp.keep.eq(keep),
                     hist.valid.eq(part_valid), hist.mask.eq(count_m)]
        m.d.comb += [hist.digit[j].eq(digit(part_x[j], hd)) for j in range(P)]
        for j in range(P):
            m.d.comb += [buf_w[j].en.eq(comp.we[j]), buf_w[j].addr.eq(comp.addr[j]),
                         buf_w[j].data.eq(comp.wdata[j])]
            m.d.comb += [buf_r[j].addr.eq(rd_addr), buf_r[j].en.eq(1),
                         mem_r[j].addr.eq(Mux(state == EMIT, em.addr, rd_addr)),
                         mem_r[j].en.eq(Mux(state == EMIT, em.en, 1)),
                         em.rdata[j].eq(mem_r[j].data)]

        # --- the bracket: computed once, from the histogram of the sample rows ----------------
        with m.If(s1_valid & loading & (s1_row == sample - 1)):
            m.d.sync += arm.eq(1)
        with m.If(arm):
            m.d.sync += [arm.eq(0), use_br.eq(1), bhi.eq(finder.bucket[0]),
                         blo.eq(finder.bucket[1])]
        m.d.comb += finder.rank[1].eq(mid + margin)
        with m.If(state == DECIDE):
            m.d.comb += finder.rank[0].eq(Mux(hd == 0, intake.k, r))
        with m.Else():
            m.d.comb += finder.rank[0].eq(Mux(mid > margin, mid - margin, 1))

        # --- control --------------------------------------------------------------------------
        m.d.comb += intake.free.eq(state == IDLE)
        b, above = finder.bucket[0], finder.above[0]
        new_key = Signal(W)
        for i, (shift, bits) in enumerate(digits):
            with m.If(hd == i):
                m.d.comb += new_key.eq(kkey | (b[:bits] << shift))
        new_r = Signal(QB)
        m.d.comb += new_r.eq(Mux(hd == 0, intake.k, r) - above)
        # Pass 1 may read buf if it holds every score of the chosen bucket: the bucket lies in
        # the bracket, or no score was filtered out. The latter is tested on the copy count,
        # not on ``rows <= S + 1`` (the golden model's form, equal without input gaps): a gap
        # after the sample lets the bracket filter row S, and a kept score could then be
        # missing from buf (pass 2 over zero candidates: a hang).
        hit = ((b >= blo) & (b <= bhi)) | (comp.count == intake.n)

        with m.If(state == IDLE):
            with m.If(intake.start):
                m.d.comb += [hist.clear.eq(1), comp.clear.eq(1)]
                m.d.sync += [use_br.eq(0), arm.eq(0), s1_valid.eq(0), kkey.eq(0), hd.eq(0),
                             state.eq(LOAD)]
        with m.Elif(state == LOAD):
            m.d.sync += [s1_valid.eq(intake.beat_valid), s1_data.eq(intake.beat_data),
                         s1_mask.eq(intake.beat_mask), s1_row.eq(intake.beat_row)]
            with m.If(intake.done):
                m.d.sync += state.eq(Mux(intake.error, ERROR, LOADED))
        with m.Elif(state == LOADED):
            m.d.sync += [s1_valid.eq(0), state.eq(DECIDE)]
        with m.Elif(state == ERROR):
            m.d.comb += em.start_error.eq(1)
            with m.If(em.start_error_done):
                m.d.sync += state.eq(IDLE)
        with m.Elif(state == DECIDE):
            with m.If(hd == ND - 1):
                m.d.comb += [em.start.eq(1), em.kth.eq(new_key ^ (1 << (W - 1))),
                             em.quota.eq(new_r)]
                m.d.sync += state.eq(EMIT)
            with m.Else():
                m.d.comb += [hist.clear.eq(1), comp.clear.eq(1), scan.start.eq(1)]
                c_next = Signal(QB)
                src_next = Signal()
                m.d.comb += [src_next.eq((hd == 0) & ~hit),
                             c_next.eq(Mux(src_next, intake.n, comp.count))]
                m.d.sync += [lvl.eq(hd), hd.eq(hd + 1), bsel.eq(b), kkey.eq(new_key),
                             r.eq(new_r), src_mem.eq(src_next), lim.eq(c_next),
                             prows.eq((c_next + (P - 1)) >> LP), state.eq(PASS)]
        with m.Elif(state == PASS):
            with m.If(scan.done):
                m.d.sync += state.eq(DECIDE)
        with m.Elif(state == EMIT):
            with m.If(~em.busy):
                m.d.sync += state.eq(IDLE)
        return m


PARAMS = (
    Param("per_beat", Choice(PER_BEAT_CHOICES), "P: scores per beat and lanes per pass"),
    Param("max_n", Range(Ref("2 * per_beat", lambda p: 2 * p["per_beat"]), 1 << 16,
                         multiple_of="per_beat"), "largest n of a request"),
    Param("score_bits", Range(2, 32), "signed score width"),
)

UNIT = Unit(
    "topk", TopK, "top-k engine: radix select with a sampled bracket, P lanes, run-time n, k",
    (*PARAMS, Param("digit_bits", Range(2, 8), "R: radix digit width (2**R counters)")),
    sim=(SimPoint({"max_n": 256, "score_bits": 16, "per_beat": 16, "digit_bits": 6}),),
    formal=Formal(cover_depth=12),
    synth=Synth(boards=("ulx3s-85f", "orangecrab-r0.2")))
