"""Threshold / top-k detector with a greedy lane scheduler (DESIGN.md section 4.3; DOTA Sec. 6.1
and 6.3, DSA Sec. 3.1 and 5.3-5.4, HB-BSSA block sparsity).

The contract -- commands, granules, bad requests, the output beats and the lane assignment --
is :mod:`attnforge.golden.detector`; this module is its hardware.

Structure: three components, each of which can be simulated, proven and synthesized alone,
joined by streams (``wiring.connect``)::

    cmd, i ──► Ingest ──o══(granule rows)══i──► Select ──o══(kept rows)══i──► Scheduler ──► idx
                                                                                       └──► mask

:class:`Ingest`
    Latches a command, then accepts ``P`` scores per cycle. A combinational max tree over the
    ``P`` lanes gives, level by level, the maxima of aligned groups of 1, 2, 4 ... ``P`` lanes;
    the run-time granularity picks the level (``C <= P``) or folds the whole beat into a
    running maximum (``C > P``, and the rows 2..B of a block group). The granule scores land in
    a register file of ``max_len`` slots that *is* the payload of its output ``o``: one beat
    per command, a whole row of granule scores (:func:`granule_row_layout`). The select stage
    copies it in the cycle it takes it; the next row's first beat is accepted in that same
    cycle (the copy reads the old contents), so there is no bubble between rows.
:class:`Select`
    *Top-k only:* a radix select finds the k-th largest granule score ``t`` in ``b + 1``
    cycles (``b`` = ``score_bits``), one bit per cycle, by counting over all slots of its copy
    ``S`` at once how many are ``>=`` a probe; the last cycle counts the ones ``> t`` to get
    the quota ``q`` of ties at ``t`` that are kept. Threshold mode sets ``t`` = threshold,
    ``q`` = all. *Both modes:* one word of ``P`` granules per cycle: keep ``s > t``, or
    ``s == t`` while fewer than ``q`` equal ones were kept before (running count + prefix count
    inside the word: lower index wins). A prefix-popcount compaction network packs the kept
    indices and their scores to the front of a beat of its output row stream ``o``
    (:func:`kept_layout`); the mask accumulates and rides on the row's ``last`` beat.
:class:`Scheduler`
    ``L`` relative lane loads. At a row's first beat the lane with the smallest load (lowest
    index on ties) is chosen and all loads are rebased by the minimum (keeps them in
    ``[0, 2 * max_len]`` forever, the choice is unchanged); each beat adds its ``count`` to the
    row's lane. This *is* greedy least-loaded assignment in row order. It is combinational on
    the data path (the lane is attached to the beat it passes through) and forks each row's
    last beat to both outputs ``idx`` and ``mask``, so it costs no cycle.

Throughput and latency
----------------------
Threshold mode: ``P`` scores per cycle sustained, rows back to back with no bubble (ingest
takes ``R * ceil(length / P)`` cycles per command, select ``ceil(G / P)`` <= that). Top-k mode
adds ``score_bits + 1`` radix cycles per command in the select stage, so rows shorter than
``P * (score_bits + 1)`` see bubbles (``P * W / (W + b + 1)`` scores per cycle for rows of
``W`` beats). :attr:`Detector.latency`: the first ``idx`` beat of a row is valid 3 cycles
after the cycle its last score beat is taken (threshold) or ``b + 4`` (top-k) -- the same as
the single-block design before the split (the stage boundaries are the registers that were
there). A bad command costs one ingest and one select cycle.

Swapping in the top-k engine (``rtl/topk.py``, issue 5): the radix select is the only part
that depends on the mode; any engine that returns ``(t, q)`` -- the k-th value and the tie
quota -- for the granules in ``S`` can replace it without touching the keep rule, the
compaction or the scheduler. The radix select is chosen here because ``S`` is a register file
(all slots visible at once), which makes one count per bit cheap for modest ``max_len``.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from ..golden.detector import Gran, Mode
from .streams import RowLayout
from .unit import Choice, Formal, Param, Range, Ref, SimPoint, Synth, Unit

__all__ = ["Detector", "Ingest", "Select", "Scheduler", "cmd_layout", "score_layout",
           "granule_row_layout", "kept_layout", "mask_layout", "idx_layout", "lane_shape",
           "index_bits"]

_LOG_COLS = {g: exact_log2(g.cols) for g in Gran}
_LOG_ROWS = {g: exact_log2(g.rows) for g in Gran}


# ------------------------------------------------------------------------------------ layouts

def cmd_layout(max_len, score_bits):
    """Payload of the command stream ``cmd``: one command per row (per B rows for blocks)."""
    return data.StructLayout({
        "mode":      1,                              # Mode: 0 threshold, 1 top-k
        "gran":      3,                              # Gran code; 6, 7 are bad requests
        "length":    unsigned(max_len.bit_length()),  # row length in scores, 1..max_len
        "threshold": signed(score_bits + 1),         # keep score >= threshold
        "k":         unsigned(max_len.bit_length()),  # top-k count, 1..G
        "restart":   1,                              # clear the scheduler's lane loads first
    })


def score_layout(per_beat, score_bits):
    """Payload of the score stream ``i``: ``P`` signed scores (lane i = column w*P + i).

    Not a row stream: the command carries the row length (and, for blocks, the row count),
    which the detector needs *before* the scores to reject a bad request without consuming
    any; ``count``/``last`` on the scores would only repeat it (see docs/detector.md)."""
    return data.StructLayout({"scores": data.ArrayLayout(signed(score_bits), per_beat)})


def lane_shape(sched_lanes):
    """Shape of a scheduler lane number."""
    return unsigned(max(1, ceil_log2(sched_lanes)))


def index_bits(max_len):
    """Width of a granule index."""
    return max(1, ceil_log2(max_len))


def granule_row_layout(max_len, score_bits):
    """Ingest -> select: one beat per command, a whole row of granule scores.

    A row stream (:class:`~attnforge.rtl.streams.RowLayout`) with ``per_beat = max_len``:
    ``data[j]`` granule ``j``'s score, ``count`` = G (granules of the row), ``last`` = 1,
    ``error`` = bad command (then ``count`` = 0); the command's ``mode``, ``threshold``, ``k``
    and ``restart`` are per-row extra fields.

    One relaxation of the row-stream rule, internal to the detector: slots ``>= count`` are
    *not* zeroed (they hold the max tree's fill or an earlier row's scores). Zeroing them cost
    5.7k transistors (+7 % of the unit at the defaults, Yosys) and buys nothing: the consumer
    must mask by ``count`` anyway, because 0 is a legal score."""
    return RowLayout(max_len, signed(score_bits), extra={
        "mode": 1, "threshold": signed(score_bits + 1), "k": unsigned(max_len.bit_length()),
        "restart": 1})


def kept_layout(per_beat, max_len, score_bits):
    """Select -> scheduler: the kept granules as a row stream (``index``, ``data``, ``count``,
    ``last``, ``error``) plus ``restart`` (per row), and the row's summary ``mask`` and
    ``total`` (kept count) -- meaningful on the ``last`` beat, where the scheduler forks them
    to the ``mask`` output."""
    return RowLayout(per_beat, signed(score_bits), index_bits(max_len), extra={
        "restart": 1, "mask": max_len, "total": unsigned(max_len.bit_length())})


def idx_layout(per_beat, max_len, score_bits, sched_lanes):
    """Payload of the ``idx`` output, a row stream: ``index`` = kept granule indices
    (ascending, CSR order), ``data`` = their granule scores, ``count``, ``last``, ``error``,
    extra ``lane`` (the scheduler's lane of the row)."""
    return RowLayout(per_beat, signed(score_bits), index_bits(max_len),
                     extra={"lane": lane_shape(sched_lanes)})


def mask_layout(max_len, sched_lanes):
    """Payload of the ``mask`` stream: one beat per command."""
    return data.StructLayout({
        "mask":  max_len,                            # bit j: granule j kept
        "count": unsigned(max_len.bit_length()),
        "lane":  lane_shape(sched_lanes),
        "error": 1,
    })


# ------------------------------------------------------------------------- expression helpers

def _popcount(bits):
    """Sum of 1-bit values as a balanced adder tree."""
    terms = list(bits)
    if not terms:
        return Const(0, 1)
    while len(terms) > 1:
        nxt = [terms[i] + terms[i + 1] for i in range(0, len(terms) - 1, 2)]
        if len(terms) % 2:
            nxt.append(terms[-1])
        terms = nxt
    return terms[0]


def _or_all(terms):
    """Bitwise OR of a list of values (0 when empty)."""
    out = Const(0, 1)
    for t in terms:
        out = out | t
    return out


def _smax(a, b):
    return Mux(a > b, a, b)


def _compact(keep, items):
    """Prefix-popcount compaction: ``out[s]`` = the item of the ``s``-th kept lane (0 when
    fewer than ``s + 1`` lanes are kept). ``items`` are plain values of one width."""
    before = Const(0, 1)
    hits = [[] for _ in keep]
    for i, (k, item) in enumerate(zip(keep, items)):
        for s in range(i + 1):
            hits[s].append(Mux(k & (before == s), item, 0))
        before = before + k
    return [_or_all(h) for h in hits]


# -------------------------------------------------------------------------------- components

class _Stage(wiring.Component):
    """Common constructor of the stages: the detector's parameters, checked by its record
    (a stage built alone rejects what the unit rejects, with the same one-line message)."""

    def __init__(self, members, **params):
        Detector.record.validate(**params)
        self._params = params
        super().__init__(members)


class Ingest(_Stage):
    """Commands and score beats in, rows of granule scores out.

    Members: ``cmd`` (in, :func:`cmd_layout`), ``i`` (in, :func:`score_layout`), ``o`` (out,
    :func:`granule_row_layout`). A good command takes its ``R * ceil(length / P)`` score beats,
    one per cycle, and then offers its row on ``o`` (valid the cycle after the last beat); a bad
    command takes none and offers an error row (``count`` 0, ``error`` 1) the cycle after it is
    accepted. The next command is accepted with the last beat of the current one; its first
    beat is taken in the cycle ``o`` is taken (or while ``o`` is empty). Slots ``>= count`` of
    ``o`` are don't-care (see :func:`granule_row_layout`).
    """

    def __init__(self, *, per_beat=8, max_len=64, score_bits=8):
        super().__init__({
            "cmd": In(stream.Signature(cmd_layout(max_len, score_bits))),
            "i": In(stream.Signature(score_layout(per_beat, score_bits))),
            "o": Out(stream.Signature(granule_row_layout(max_len, score_bits))),
        }, per_beat=per_beat, max_len=max_len, score_bits=score_bits)

    def _decode(self, m, c, N):
        """Granule shape and validity of command ``c`` (combinational)."""
        logc, logr, good_gran = Signal(3), Signal(3), Signal()
        with m.Switch(c.gran):
            for g in Gran:
                with m.Case(g.value):
                    m.d.comb += [logc.eq(_LOG_COLS[g]), logr.eq(_LOG_ROWS[g]), good_gran.eq(1)]
            with m.Default():                       # codes 6, 7: a bad request (every
                m.d.comb += [logc.eq(0), logr.eq(0), good_gran.eq(0)]   # case: lint-clean)
        ng = Signal(N.bit_length() + 1)
        m.d.comb += ng.eq((c.length + (Const(1, 6) << logc) - 1) >> logc)
        bad = Signal()
        m.d.comb += bad.eq(~good_gran | (c.length == 0) | (c.length > N) |
                           ((c.mode == Mode.TOPK) & ((c.k == 0) | (c.k > ng))))
        return logc, logr, ng, bad

    def _max_tree(self, m, scores, beat, length, P, b):
        """Maxima of aligned groups of 1, 2, 4 ... P lanes of a beat; lanes past the row end
        read as the most negative score. Returns the levels (level l: P >> l values)."""
        logp = exact_log2(P)
        lv = [[Signal(signed(b), name=f"lv0_{i}") for i in range(P)]]
        for i in range(P):
            col = Cat(Const(i, logp), beat) if logp else beat
            m.d.comb += lv[0][i].eq(Mux(col < length, scores[i], -(1 << (b - 1))))
        for lvl in range(1, logp + 1):
            prev = lv[-1]
            cur = [Signal(signed(b), name=f"lv{lvl}_{i}") for i in range(len(prev) // 2)]
            m.d.comb += [x.eq(_smax(prev[2 * i], prev[2 * i + 1])) for i, x in enumerate(cur)]
            lv.append(cur)
        return lv

    def _granule_file(self, m, G, lv, logc, beat, first_row, take, P, N, b):
        """Write (or fold with max) this beat's granule scores into the slots ``G``."""
        logp = exact_log2(P)
        for j in range(N):
            we_terms, cand, first = [], Const(-(1 << (b - 1)), signed(b)), Const(1, 1)
            for lc in sorted(set(_LOG_COLS.values())):
                C = 1 << lc
                if j >= -(-N // C):
                    continue
                sel = logc == lc
                if C <= P:
                    r = P // C
                    hit, v, f = beat == j // r, lv[lc][j % r], first_row
                else:
                    q = exact_log2(C // P)
                    hit, v = (beat >> q) == j, lv[logp][0]
                    f = first_row & ((beat & ((1 << q) - 1)) == 0)
                we_terms.append(sel & hit)
                cand, first = Mux(sel, v, cand), Mux(sel, f, first)
            can_acc = any(j < -(-N // g.cols) and (g.rows > 1 or g.cols > P) for g in Gran)
            new = Mux(first, cand, _smax(G[j], cand)) if can_acc else cand
            with m.If(take & _or_all(we_terms)):
                m.d.sync += G[j].eq(new)

    def elaborate(self, platform):
        m = Module()
        P, N, b = self._params["per_beat"], self._params["max_len"], self._params["score_bits"]
        len_w, words = N.bit_length(), N // P
        c, o = self.cmd.payload, self.o.payload
        c_logc, c_logr, c_ng, c_bad = self._decode(m, c, N)

        have = Signal()                              # a good command is taking its beats
        r_mode, r_thr, r_k, r_restart = Signal(), Signal(signed(b + 1)), Signal(len_w), Signal()
        r_logc, r_ng, r_len = Signal(3), Signal(len_w + 1), Signal(len_w)
        r_lastbeat, r_lastrow = Signal(range(words)), Signal(range(32))
        beat, row = Signal(range(words)), Signal(range(32))

        xfer = self.o.valid & self.o.ready
        m.d.comb += self.i.ready.eq(have & (~self.o.valid | self.o.ready))
        take = Signal()
        m.d.comb += take.eq(self.i.valid & self.i.ready)
        row_done = take & (beat == r_lastbeat) & (row == r_lastrow)
        m.d.comb += self.cmd.ready.eq(Mux(c_bad, ~have & (~self.o.valid | self.o.ready),
                                          ~have | row_done))

        lv = self._max_tree(m, self.i.payload.scores, beat, r_len, P, b)
        self._granule_file(m, o.data, lv, r_logc, beat, row == 0, take, P, N, b)

        with m.If(take):
            with m.If(beat == r_lastbeat):
                m.d.sync += [beat.eq(0), row.eq(row + 1)]
            with m.Else():
                m.d.sync += beat.eq(beat + 1)
        with m.If(xfer):
            m.d.sync += self.o.valid.eq(0)
        with m.If(row_done):
            m.d.sync += [have.eq(0), self.o.valid.eq(1), o.mode.eq(r_mode), o.threshold.eq(r_thr),
                         o.k.eq(r_k), o.restart.eq(r_restart), o.error.eq(0), o.count.eq(r_ng),
                         o.last.eq(1)]
        with m.If(self.cmd.valid & self.cmd.ready):
            with m.If(c_bad):
                m.d.sync += [self.o.valid.eq(1), o.mode.eq(c.mode), o.threshold.eq(c.threshold),
                             o.k.eq(c.k), o.restart.eq(c.restart), o.error.eq(1), o.count.eq(0),
                             o.last.eq(1)]
            with m.Else():
                m.d.sync += [have.eq(1), r_mode.eq(c.mode), r_thr.eq(c.threshold),
                             r_k.eq(c.k), r_restart.eq(c.restart), r_logc.eq(c_logc),
                             r_ng.eq(c_ng), r_len.eq(c.length),
                             r_lastbeat.eq((c.length - 1) >> exact_log2(P)),
                             r_lastrow.eq((Const(1, 6) << c_logr) - 1), beat.eq(0), row.eq(0)]
        return m


class Select(_Stage):
    """Rows of granule scores in, the kept granules out as a row stream.

    Members: ``i`` (in, :func:`granule_row_layout`), ``o`` (out, :func:`kept_layout`). A row is
    taken (copied) in one cycle; top-k then spends ``score_bits + 1`` cycles in the radix select;
    then one word of ``P`` granules per cycle produces a beat (registered: valid the next
    cycle) when it keeps a granule or is the row's last word. The next row is taken in the cycle
    the last word is emitted. An error row gives one beat ``count`` 0, ``last`` 1, ``error`` 1.
    """

    def __init__(self, *, per_beat=8, max_len=64, score_bits=8):
        super().__init__({
            "i": In(stream.Signature(granule_row_layout(max_len, score_bits))),
            "o": Out(stream.Signature(kept_layout(per_beat, max_len, score_bits))),
        }, per_beat=per_beat, max_len=max_len, score_bits=score_bits)

    def _radix(self, m, S, ng, k, start, t, quota, b):
        """Radix select of the k-th largest of ``S[:ng]``: ``start`` loads the first probe; in
        its last cycle it writes the registers ``t`` (the k-th value) and ``quota``
        (``k - #{> t}``); returns ``busy``. One cycle per bit finds ``t``, one more counts
        ``> t``."""
        busy, bitsel, prefix = Signal(), Signal(b), Signal(b)   # prefix: offset binary
        probe = Signal(b + 1)
        m.d.comb += probe.eq(Mux(bitsel != 0, prefix | bitsel, prefix + 1))
        cnt = Signal(len(ng))
        m.d.comb += cnt.eq(_popcount((j < ng) & (Cat(s[:b - 1], ~s[b - 1]) >= probe)
                                    for j, s in enumerate(S)))
        with m.If(busy):
            with m.If(bitsel != 0):
                with m.If(cnt >= k):
                    m.d.sync += prefix.eq(probe)
                m.d.sync += bitsel.eq(bitsel >> 1)
            with m.Else():
                m.d.sync += [busy.eq(0), quota.eq(k - cnt), t.eq(prefix - (1 << (b - 1)))]
        with m.If(start):
            m.d.sync += [busy.eq(1), prefix.eq(0), bitsel.eq(1 << (b - 1))]
        return busy

    def elaborate(self, platform):
        m = Module()
        P, N, b = self._params["per_beat"], self._params["max_len"], self._params["score_bits"]
        len_w, words, logp = N.bit_length(), N // P, exact_log2(P)
        ip, op = self.i.payload, self.o.payload

        busy = Signal()
        S = [Signal(signed(b), name=f"s{j}") for j in range(N)]
        s_mode, s_k, s_restart, s_err = Signal(), Signal(len_w), Signal(), Signal()
        s_ng = Signal(len_w + 1)
        t = Signal(signed(b + 1))                   # keep s > t, or s == t within the quota
        quota = Signal(len_w + 1)
        w = Signal(range(words))
        eq_seen, count, mask_acc = Signal(len_w + 1), Signal(len_w), Signal(N)

        take = Signal()
        radix = self._radix(m, S, s_ng, s_k, take & (ip.mode == Mode.TOPK) & ~ip.error,
                            t, quota, b)
        topk = s_mode == Mode.TOPK

        # one word of P granules: keep rule, compaction, mask
        is_last = w == Mux(s_ng == 0, 0, (s_ng - 1) >> logp)
        cur = Array(Cat(*S[ww * P:(ww + 1) * P]) for ww in range(words))[w]
        base_idx = w << logp
        keep, eqs, eq_before = [], [], eq_seen
        for i in range(P):
            sv = cur[i * b:(i + 1) * b].as_signed()
            valid = (base_idx + i) < s_ng
            eqv = valid & (sv == t)
            keep.append(Signal(name=f"keep{i}"))
            m.d.comb += keep[-1].eq(valid & ((sv > t) | (eqv & (~topk | (eq_before < quota)))))
            eqs.append(eqv)
            eq_before = eq_before + eqv
        n = Signal(range(P + 1))
        m.d.comb += n.eq(_popcount(keep))
        # index = word * P + lane: compact the lane numbers only (log2 P bits), the word
        # number is common to the beat (gated so that slots >= count stay 0)
        lanes = _compact(keep, [Const(i, logp) for i in range(P)]) if logp else [Const(0, 0)]
        slots = [Mux(n > s, Cat(lane, w), 0) for s, lane in enumerate(lanes)]
        values = _compact(keep, [cur[i * b:(i + 1) * b] for i in range(P)])
        mask_now = Cat(*[Mux(w == ww, Cat(*keep), mask_acc[ww * P:(ww + 1) * P])
                         for ww in range(words)])

        emit = (n != 0) | is_last
        adv = Signal()                              # word w is done (its beat, if any, goes)
        m.d.comb += adv.eq(busy & ~radix & (~emit | ~self.o.valid | self.o.ready))
        m.d.comb += self.i.ready.eq(~busy | (adv & is_last))
        m.d.comb += take.eq(self.i.valid & self.i.ready)

        with m.If(adv):
            m.d.sync += [w.eq(w + 1), eq_seen.eq(eq_seen + _popcount(eqs)), count.eq(count + n),
                         mask_acc.eq(mask_now)]
            with m.If(is_last):
                m.d.sync += busy.eq(0)
        with m.If(take):
            m.d.sync += [busy.eq(1), s_mode.eq(ip.mode), s_k.eq(ip.k), s_restart.eq(ip.restart),
                         s_err.eq(ip.error), s_ng.eq(ip.count), t.eq(ip.threshold),
                         w.eq(0), eq_seen.eq(0), count.eq(0), mask_acc.eq(0)]
            m.d.sync += [s.eq(g) for s, g in zip(S, ip.data)]

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(adv & emit):
            m.d.sync += [self.o.valid.eq(1), op.count.eq(n), op.last.eq(is_last),
                         op.error.eq(s_err), op.restart.eq(s_restart), op.mask.eq(mask_now),
                         op.total.eq(count + n)]
            m.d.sync += [op.index[s].eq(v) for s, v in enumerate(slots)]
            m.d.sync += [op.data[s].eq(v) for s, v in enumerate(values)]
        return m


class Scheduler(_Stage):
    """Greedy least-loaded lane assignment of rows; kept rows in, ``idx`` and ``mask`` out.

    Members: ``i`` (in, :func:`kept_layout`), ``idx`` (out, :func:`idx_layout`), ``mask`` (out,
    :func:`mask_layout`). Combinational on the data path (zero cycles): each beat of ``i``
    leaves on ``idx`` with its row's lane; a ``last`` beat also leaves on ``mask`` (the row's
    ``mask``, ``total`` as ``count``, ``error``, lane), and is taken from ``i`` once both outputs
    took it (each output's ``valid`` drops after its own transfer). Loads change only when a
    beat is taken, so a stalled beat's lane is stable.

    Parameters: ``per_beat``, ``max_len``, ``score_bits`` (the row layout) and ``sched_lanes``
    (L, 1..16).
    """

    def __init__(self, *, per_beat=8, max_len=64, score_bits=8, sched_lanes=4):
        super().__init__({
            "i": In(stream.Signature(kept_layout(per_beat, max_len, score_bits))),
            "idx": Out(stream.Signature(idx_layout(per_beat, max_len, score_bits, sched_lanes))),
            "mask": Out(stream.Signature(mask_layout(max_len, sched_lanes))),
        }, per_beat=per_beat, max_len=max_len, score_bits=score_bits, sched_lanes=sched_lanes)

    def elaborate(self, platform):
        m = Module()
        N, L = self._params["max_len"], self._params["sched_lanes"]
        ip = self.i.payload
        loads = [Signal(range(2 * N + 1), name=f"load{lane}") for lane in range(L)]
        row_lane = Signal(lane_shape(L))
        mid = Signal()                              # a row's earlier beats went: lane chosen
        idx_done, mask_done = Signal(), Signal()    # this beat already left on idx / mask

        base = [Mux(ip.restart, 0, ld) for ld in loads]
        best, best_v = Const(0, lane_shape(L)), base[0]
        for lane in range(1, L):
            better = base[lane] < best_v
            best, best_v = Mux(better, lane, best), Mux(better, base[lane], best_v)
        lane = Signal(lane_shape(L))
        m.d.comb += lane.eq(Mux(mid, row_lane, best))

        m.d.comb += [self.idx.valid.eq(self.i.valid & ~idx_done),
                     self.mask.valid.eq(self.i.valid & ip.last & ~mask_done),
                     self.i.ready.eq((idx_done | self.idx.ready) &
                                     (~ip.last | mask_done | self.mask.ready))]
        for name in ("data", "index", "count", "last", "error"):
            m.d.comb += getattr(self.idx.payload, name).eq(getattr(ip, name))
        m.d.comb += [self.idx.payload.lane.eq(lane), self.mask.payload.mask.eq(ip.mask),
                     self.mask.payload.count.eq(ip.total), self.mask.payload.lane.eq(lane),
                     self.mask.payload.error.eq(ip.error)]

        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [mid.eq(~ip.last), row_lane.eq(lane), idx_done.eq(0), mask_done.eq(0)]
            with m.If(mid):
                for k, ld in enumerate(loads):
                    with m.If(row_lane == k):
                        m.d.sync += ld.eq(ld + ip.count)
            with m.Else():
                m.d.sync += [ld.eq(bs - best_v + Mux(best == k, ip.count, 0))
                             for k, (ld, bs) in enumerate(zip(loads, base))]
        with m.Else():
            m.d.sync += [idx_done.eq(idx_done | (self.idx.valid & self.idx.ready)),
                         mask_done.eq(mask_done | (self.mask.valid & self.mask.ready))]
        return m


class Detector(wiring.Component):
    """Threshold / top-k detector at element, 1xV vector or BxB block granularity, with a
    greedy least-loaded lane scheduler: :class:`Ingest`, :class:`Select` and
    :class:`Scheduler` joined by streams.

    Parameters
    ----------
    per_beat : int
        P, scores per input beat (and granules per select cycle, kept granules per ``idx``
        beat): 1, 2, 4, 8, 16 or 32 (default 8).
    max_len : int
        Longest row, in scores: a multiple of P in [max(P, 2), 1024] (default 64). Sets the
        register files (``2 * max_len`` scores) and the mask width.
    score_bits : int
        Lane width of a score: 2, 4 or 8 (default 8). INT2/INT4 scores travel sign-extended,
        so 8 serves all three precisions at run time.
    sched_lanes : int
        L, scheduler lanes, 1..16 (default 4).

    Members
    -------
    cmd : ``In(stream.Signature(cmd_layout(max_len, score_bits)))``
    i : ``In(stream.Signature(score_layout(per_beat, score_bits)))``
    mask : ``Out(stream.Signature(mask_layout(max_len, sched_lanes)))``
    idx : ``Out(stream.Signature(idx_layout(per_beat, max_len, score_bits, sched_lanes)))``
    """

    def __init__(self, *, per_beat=8, max_len=64, score_bits=8, sched_lanes=4):
        self.record.validate(per_beat=per_beat, max_len=max_len, score_bits=score_bits,
                             sched_lanes=sched_lanes)
        self._p, self._max_len, self._b, self._lanes = per_beat, max_len, score_bits, sched_lanes
        super().__init__({
            "cmd": In(stream.Signature(cmd_layout(max_len, score_bits))),
            "i": In(stream.Signature(score_layout(per_beat, score_bits))),
            "mask": Out(stream.Signature(mask_layout(max_len, sched_lanes))),
            "idx": Out(stream.Signature(idx_layout(per_beat, max_len, score_bits, sched_lanes))),
        })

    @property
    def per_beat(self):
        """P, scores per input beat (and granules per select cycle)."""
        return self._p

    @property
    def max_len(self):
        """Longest row, in scores."""
        return self._max_len

    @property
    def score_bits(self):
        """Width of one score lane."""
        return self._b

    @property
    def sched_lanes(self):
        """Scheduler lanes L."""
        return self._lanes

    @property
    def topk_cycles(self):
        """Extra select cycles a top-k command spends in the radix select."""
        return self._b + 1

    @property
    def latency(self):
        """``{Mode: cycles}``: from the cycle a row's last score beat is taken to the cycle its
        first ``idx`` beat is valid (no stalls, select stage idle): 3 in threshold mode (ingest
        -> granule row valid, select copy, first word registered), ``score_bits + 4`` in top-k
        mode (plus the radix select)."""
        return {Mode.THRESHOLD: 3, Mode.TOPK: 3 + self.topk_cycles}

    def elaborate(self, platform):
        m = Module()
        p = dict(per_beat=self._p, max_len=self._max_len, score_bits=self._b)
        m.submodules.ingest = ingest = Ingest(**p)
        m.submodules.select = select = Select(**p)
        m.submodules.scheduler = sched = Scheduler(**p, sched_lanes=self._lanes)
        wiring.connect(m, wiring.flipped(self.cmd), ingest.cmd)
        wiring.connect(m, wiring.flipped(self.i), ingest.i)
        wiring.connect(m, ingest.o, select.i)
        wiring.connect(m, select.o, sched.i)
        wiring.connect(m, sched.idx, wiring.flipped(self.idx))
        wiring.connect(m, sched.mask, wiring.flipped(self.mask))
        return m


UNIT = Unit(
    "detector", Detector,
    "threshold/top-k detector (element, 1xV, BxB) + greedy lane scheduler",
    (Param("per_beat", Choice((1, 2, 4, 8, 16, 32)), "P: scores per beat"),
     Param("max_len", Range(Ref("max(per_beat, 2)", lambda p: max(p["per_beat"], 2)), 1024,
                            multiple_of="per_beat"), "longest row, in scores"),
     Param("score_bits", Choice((2, 4, 8)), "width of a score lane"),
     Param("sched_lanes", Range(1, 16), "scheduler lanes L")),
    sim=(SimPoint({"per_beat": 4, "max_len": 32, "score_bits": 4, "sched_lanes": 3}),
         SimPoint({"per_beat": 8, "max_len": 32, "score_bits": 8, "sched_lanes": 4})),
    synth=Synth(boards=("ulx3s-85f", "orangecrab-r0.2")),
    formal=Formal(cover_depth=12))
