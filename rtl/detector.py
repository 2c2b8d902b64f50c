"""Threshold / top-k detector with a greedy lane scheduler (DESIGN.md section 4.3; DOTA Sec. 6.1
and 6.3, DSA Sec. 3.1 and 5.3-5.4, HB-BSSA block sparsity).

The contract -- commands, granules, bad requests, the output beats and the lane assignment --
is :mod:`attnforge.golden.detector`; this module is its hardware.

Structure (two stages with a one-row buffer between them, so they overlap):

``ingest``
    Latches a command, then accepts ``P`` scores per cycle. A combinational max tree over the
    ``P`` lanes gives, level by level, the maxima of aligned groups of 1, 2, 4 ... ``P`` lanes;
    the run-time granularity picks the level (``C <= P``) or folds the whole beat into a
    running maximum (``C > P``, and the rows 2..B of a block group). The granule scores land in
    a register file ``G`` of ``max_len`` slots. When the row (group) is complete, ``G`` is
    copied in one cycle into the select stage's shadow copy ``S``; the next row's first beat is
    accepted in that same cycle (the copy reads the old contents), so there is no bubble
    between rows.
``select``
    *Top-k only:* a radix select finds the k-th largest granule score ``t`` in ``b + 1``
    cycles (``b`` = ``score_bits``), one bit per cycle, by counting over all ``S`` slots at
    once how many are ``>=`` a probe; the last cycle counts the ones ``> t`` to get the quota
    ``q`` of ties at ``t`` that are kept. Threshold mode sets ``t`` = threshold, ``q`` = all.
    *Both modes:* one word of ``P`` granules per cycle: keep ``s > t``, or ``s == t`` while
    fewer than ``q`` equal ones were kept before (running count + prefix count inside the
    word: lower index wins). A prefix-popcount compaction network packs the kept indices to
    the front of an ``idx`` beat; the mask accumulates and leaves with the count at row end.
``scheduler``
    ``L`` relative lane loads. At a row's first output word the lane with the smallest load
    (lowest index on ties) is chosen and all loads are rebased by the minimum (keeps them in
    ``[0, 2 * max_len]`` forever, the choice is unchanged); each beat adds its ``n`` to the
    row's lane. This *is* greedy least-loaded assignment in row order.

Throughput and latency
----------------------
Threshold mode: ``P`` scores per cycle sustained, rows back to back with no bubble (ingest
takes ``R * ceil(length / P)`` cycles per command, select ``ceil(G / P)`` <= that). Top-k mode
adds ``score_bits + 1`` radix cycles per command in the select stage, so rows shorter than
``P * (score_bits + 1)`` see bubbles (``P * W / (W + b + 1)`` scores per cycle for rows of
``W`` beats). The first ``idx`` beat of a row is valid 3 cycles after the cycle its last score
beat is taken (threshold) or ``b + 4`` (top-k). A bad command costs one ingest and one select cycle.

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
from .unit import Choice, Formal, Param, Range, Ref, SimPoint, Unit

__all__ = ["Detector", "cmd_layout", "score_layout", "mask_layout", "idx_layout"]

_LOG_COLS = {g: exact_log2(g.cols) for g in Gran}
_LOG_ROWS = {g: exact_log2(g.rows) for g in Gran}


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


def score_layout(parallel, score_bits):
    """Payload of the score stream ``i``: ``P`` signed scores (lane i = column w*P + i)."""
    return data.StructLayout({"scores": data.ArrayLayout(signed(score_bits), parallel)})


def _lane_shape(lanes):
    return unsigned(max(1, ceil_log2(lanes)))


def mask_layout(max_len, lanes):
    """Payload of the ``mask`` stream: one beat per command."""
    return data.StructLayout({
        "mask":  max_len,                            # bit j: granule j kept
        "count": unsigned(max_len.bit_length()),
        "lane":  _lane_shape(lanes),
        "err":   1,
    })


def idx_layout(parallel, max_len, lanes):
    """Payload of the ``idx`` stream: kept granule indices, ascending, up to ``P`` per beat."""
    return data.StructLayout({
        "idx":  data.ArrayLayout(unsigned(max(1, ceil_log2(max_len))), parallel),
        "n":    unsigned(parallel.bit_length()),
        "lane": _lane_shape(lanes),
        "last": 1,
    })


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


def _smax(a, b):
    return Mux(a > b, a, b)


class Detector(wiring.Component):
    """Threshold / top-k detector at element, 1xV vector or BxB block granularity, with a
    greedy least-loaded lane scheduler.

    Parameters
    ----------
    parallel : int
        P, scores accepted per cycle: 1, 2, 4, 8, 16 or 32 (default 8).
    max_len : int
        Longest row, in scores: a multiple of P in [max(P, 2), 1024] (default 64). Sets the
        register files (``2 * max_len`` scores) and the mask width.
    score_bits : int
        Lane width of a score: 2, 4 or 8 (default 8). INT2/INT4 scores travel sign-extended,
        so 8 serves all three precisions at run time.
    lanes : int
        L, scheduler lanes, 1..16 (default 4).

    Members
    -------
    cmd : ``In(stream.Signature(cmd_layout(max_len, score_bits)))``
    i : ``In(stream.Signature(score_layout(parallel, score_bits)))``
    mask : ``Out(stream.Signature(mask_layout(max_len, lanes)))``
    idx : ``Out(stream.Signature(idx_layout(parallel, max_len, lanes)))``
    """

    def __init__(self, *, parallel=8, max_len=64, score_bits=8, lanes=4):
        self.record.validate(parallel=parallel, max_len=max_len, score_bits=score_bits,
                             lanes=lanes)
        self._p, self._max_len, self._b, self._lanes = parallel, max_len, score_bits, lanes
        super().__init__({
            "cmd": In(stream.Signature(cmd_layout(max_len, score_bits))),
            "i": In(stream.Signature(score_layout(parallel, score_bits))),
            "mask": Out(stream.Signature(mask_layout(max_len, lanes))),
            "idx": Out(stream.Signature(idx_layout(parallel, max_len, lanes))),
        })

    @property
    def parallel(self):
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
    def lanes(self):
        """Scheduler lanes L."""
        return self._lanes

    @property
    def topk_cycles(self):
        """Extra select cycles a top-k command spends in the radix select."""
        return self._b + 1

    def elaborate(self, platform):
        m = Module()
        P, N, b, L = self._p, self._max_len, self._b, self._lanes
        logp = exact_log2(P)
        words = N // P
        len_w = N.bit_length()
        smin = -(1 << (b - 1))

        # ------------------------------------------------------------ command decode (comb)
        c = self.cmd.payload
        c_logc = Signal(3)
        c_logr = Signal(3)
        c_good_gran = Signal()
        with m.Switch(c.gran):
            for g in Gran:
                with m.Case(g.value):
                    m.d.comb += [c_logc.eq(_LOG_COLS[g]), c_logr.eq(_LOG_ROWS[g]),
                                 c_good_gran.eq(1)]
            with m.Default():                       # codes 6, 7: a bad request
                m.d.comb += [c_logc.eq(0), c_logr.eq(0), c_good_gran.eq(0)]
        c_ng = Signal(len_w + 1)
        m.d.comb += c_ng.eq((c.length + (Const(1, 6) << c_logc) - 1) >> c_logc)
        c_bad = Signal()
        m.d.comb += c_bad.eq(~c_good_gran | (c.length == 0) | (c.length > N) |
                             ((c.mode == Mode.TOPK) & ((c.k == 0) | (c.k > c_ng))))

        # ------------------------------------------------------------ ingest registers
        have = Signal()
        r_mode, r_thr, r_k, r_restart = (Signal(), Signal(signed(b + 1)), Signal(len_w),
                                         Signal())
        r_logc, r_ng, r_len = Signal(3), Signal(len_w + 1), Signal(len_w)
        r_lastbeat = Signal(range(words))
        r_lastrow = Signal(range(32))
        beat = Signal(range(words))
        row = Signal(range(32))
        G = [Signal(signed(b), name=f"g{j}") for j in range(N)]

        # done slot: a complete row (or a bad command) waiting for the select stage
        full = Signal()
        d_mode, d_thr, d_k, d_restart, d_err = (Signal(), Signal(signed(b + 1)),
                                                Signal(len_w), Signal(), Signal())
        d_ng = Signal(len_w + 1)

        # ------------------------------------------------------------ select registers
        busy = Signal()
        S = [Signal(signed(b), name=f"s{j}") for j in range(N)]
        s_mode, s_k, s_restart, s_err = Signal(), Signal(len_w), Signal(), Signal()
        s_ng = Signal(len_w + 1)
        s_t = Signal(signed(b + 1))                 # keep s > t, or s == t within the quota
        s_quota = Signal(len_w + 1)
        radix = Signal()                            # radix select in progress
        bitsel = Signal(b)                          # probe bit; 0 = the final "> t" count
        prefix = Signal(b)                          # k-th value so far, offset binary
        w = Signal(range(words))
        eq_seen = Signal(len_w + 1)
        count = Signal(len_w)
        mask_acc = Signal(N)
        loads = [Signal(range(2 * N + 1), name=f"load{l}") for l in range(L)]
        row_lane = Signal(_lane_shape(L))

        # ------------------------------------------------------------ select: emit (comb)
        last_w = Signal(range(words))
        m.d.comb += last_w.eq(Mux(s_ng == 0, 0, (s_ng - 1) >> logp))
        is_last = Signal()
        m.d.comb += is_last.eq(w == last_w)
        S_words = Array(Cat(*S[ww * P:(ww + 1) * P]) for ww in range(words))
        cur = Signal(P * b)
        m.d.comb += cur.eq(S_words[w])
        base_idx = Signal(len_w + 1)
        m.d.comb += base_idx.eq(w << logp)
        valid = [Signal(name=f"v{i}") for i in range(P)]
        gt = [Signal(name=f"gt{i}") for i in range(P)]
        eq = [Signal(name=f"eq{i}") for i in range(P)]
        keep = [Signal(name=f"keep{i}") for i in range(P)]
        eq_before = eq_seen
        for i in range(P):
            sv = cur[i * b:(i + 1) * b].as_signed()
            m.d.comb += [valid[i].eq((base_idx + i) < s_ng), gt[i].eq(sv > s_t),
                         eq[i].eq(sv == s_t)]
            m.d.comb += keep[i].eq(valid[i] & (gt[i] | (eq[i] & (
                (s_mode == Mode.THRESHOLD) | (eq_before < s_quota)))))
            eq_before = eq_before + (eq[i] & valid[i])
        eq_word = _popcount([eq[i] & valid[i] for i in range(P)])
        n = Signal(range(P + 1))
        m.d.comb += n.eq(_popcount(keep))
        # compaction: slot s takes the kept lane with s kept lanes before it
        slots = [Signal(ceil_log2(N) or 1, name=f"slot{s}") for s in range(P)]
        before = Const(0, 1)
        hits = [[] for _ in range(P)]
        for i in range(P):
            pos = Signal(range(P + 1), name=f"pos{i}")
            m.d.comb += pos.eq(before)
            for s in range(i + 1):
                hits[s].append(Mux(keep[i] & (pos == s), (base_idx + i)[:len(slots[s])], 0))
            before = before + keep[i]
        for s in range(P):
            m.d.comb += slots[s].eq(_or_all(hits[s]))

        mask_now = Signal(N)
        m.d.comb += mask_now.eq(Cat(*[Mux(w == ww, Cat(*keep), mask_acc[ww * P:(ww + 1) * P])
                                      for ww in range(words)]))

        # scheduler: lane choice at a row's first word
        first_w = Signal()
        m.d.comb += first_w.eq(w == 0)
        base = [Mux(s_restart, 0, ld) for ld in loads]
        best, best_v = Const(0, _lane_shape(L)), base[0]
        for l in range(1, L):
            better = base[l] < best_v
            best = Mux(better, l, best)
            best_v = Mux(better, base[l], best_v)
        lane_now = Signal(_lane_shape(L))
        m.d.comb += lane_now.eq(Mux(first_w, best, row_lane))

        emit_beat = (n != 0) | is_last
        idx_free = ~self.idx.valid | self.idx.ready
        mask_free = ~self.mask.valid | self.mask.ready
        adv = Signal()                              # the select stage emits word w
        m.d.comb += adv.eq(busy & ~radix & (~emit_beat | idx_free) & (~is_last | mask_free))
        sel_free = ~busy | (adv & is_last)
        xfer = Signal()
        m.d.comb += xfer.eq(full & sel_free)

        # ------------------------------------------------------------ ingest (comb)
        m.d.comb += self.i.ready.eq(have & (~full | xfer))
        take = Signal()
        m.d.comb += take.eq(self.i.valid & self.i.ready)
        row_done = Signal()
        m.d.comb += row_done.eq(take & (beat == r_lastbeat) & (row == r_lastrow))
        m.d.comb += self.cmd.ready.eq(Mux(c_bad, ~have & (~full | xfer), ~have | row_done))
        cmd_take = self.cmd.valid & self.cmd.ready

        # max tree over the beat; lanes past the row end read as the most negative score
        lv = [[Signal(signed(b), name=f"lv0_{i}") for i in range(P)]]
        for i in range(P):
            col = Cat(Const(i, logp), beat) if logp else beat
            m.d.comb += lv[0][i].eq(Mux(col < r_len, self.i.payload.scores[i], smin))
        for lvl in range(1, logp + 1):
            prev = lv[-1]
            cur_l = [Signal(signed(b), name=f"lv{lvl}_{i}") for i in range(len(prev) // 2)]
            m.d.comb += [x.eq(_smax(prev[2 * i], prev[2 * i + 1])) for i, x in enumerate(cur_l)]
            lv.append(cur_l)
        first_row = row == 0
        log_cols = sorted(set(_LOG_COLS.values()))
        for j in range(N):
            we_terms, cand, first = [], Const(smin, signed(b)), Const(1, 1)
            for lc in log_cols:
                C = 1 << lc
                if j >= -(-N // C):
                    continue
                sel = r_logc == lc
                if C <= P:
                    r = P // C
                    hit = beat == j // r
                    v, f = lv[lc][j % r], first_row
                else:
                    q = exact_log2(C // P)
                    hit = (beat >> q) == j
                    v, f = lv[logp][0], first_row & ((beat & ((1 << q) - 1)) == 0)
                we_terms.append(sel & hit)
                cand = Mux(sel, v, cand)
                first = Mux(sel, f, first)
            if not we_terms:
                continue
            can_acc = any(j < -(-N // g.cols) and (g.rows > 1 or g.cols > P) for g in Gran)
            new = Mux(first, cand, _smax(G[j], cand)) if can_acc else cand
            with m.If(take & _or_all(we_terms)):
                m.d.sync += G[j].eq(new)

        # ------------------------------------------------------------ ingest (sync)
        with m.If(take):
            with m.If(beat == r_lastbeat):
                m.d.sync += [beat.eq(0), row.eq(row + 1)]
            with m.Else():
                m.d.sync += beat.eq(beat + 1)
        with m.If(xfer):
            m.d.sync += full.eq(0)
        with m.If(row_done):
            m.d.sync += [have.eq(0), full.eq(1), d_mode.eq(r_mode), d_thr.eq(r_thr),
                         d_k.eq(r_k), d_restart.eq(r_restart), d_err.eq(0), d_ng.eq(r_ng)]
        with m.If(cmd_take):
            with m.If(c_bad):
                m.d.sync += [full.eq(1), d_mode.eq(c.mode), d_thr.eq(c.threshold),
                             d_k.eq(c.k), d_restart.eq(c.restart), d_err.eq(1), d_ng.eq(0)]
            with m.Else():
                m.d.sync += [have.eq(1), r_mode.eq(c.mode), r_thr.eq(c.threshold),
                             r_k.eq(c.k), r_restart.eq(c.restart), r_logc.eq(c_logc),
                             r_ng.eq(c_ng), r_len.eq(c.length), r_lastbeat.eq((c.length - 1) >> logp),
                             r_lastrow.eq((Const(1, 6) << c_logr) - 1),
                             beat.eq(0), row.eq(0)]
        # ------------------------------------------------------------ select: radix (comb)
        probe = Signal(b + 1)
        m.d.comb += probe.eq(Mux(bitsel != 0, prefix | bitsel, prefix + 1))
        ge = []
        for j in range(N):
            u = Cat(S[j][:b - 1], ~S[j][b - 1])       # offset binary: unsigned order
            ge.append((j < s_ng) & (u >= probe))
        cnt = Signal(len_w + 1)
        m.d.comb += cnt.eq(_popcount(ge))

        # ------------------------------------------------------------ select (sync)
        with m.If(radix):
            with m.If(bitsel != 0):
                with m.If(cnt >= s_k):
                    m.d.sync += prefix.eq(probe)
                m.d.sync += bitsel.eq(bitsel >> 1)
            with m.Else():
                m.d.sync += [radix.eq(0), s_quota.eq(s_k - cnt),
                             s_t.eq(prefix - (1 << (b - 1)))]
        with m.If(adv):
            m.d.sync += [w.eq(w + 1), eq_seen.eq(eq_seen + eq_word), count.eq(count + n)]
            for ww in range(words):
                with m.If(w == ww):
                    m.d.sync += mask_acc[ww * P:(ww + 1) * P].eq(Cat(*keep))
            with m.If(first_w):
                mn = best_v
                m.d.sync += row_lane.eq(best)
                for l in range(L):
                    m.d.sync += loads[l].eq(base[l] - mn + Mux(best == l, n, 0))
            with m.Else():
                for l in range(L):
                    with m.If(row_lane == l):
                        m.d.sync += loads[l].eq(loads[l] + n)
            with m.If(is_last):
                m.d.sync += busy.eq(0)
        with m.If(xfer):
            m.d.sync += [busy.eq(1), s_mode.eq(d_mode), s_k.eq(d_k), s_restart.eq(d_restart),
                         s_err.eq(d_err), s_ng.eq(d_ng), w.eq(0), eq_seen.eq(0), count.eq(0),
                         mask_acc.eq(0), prefix.eq(0), bitsel.eq(1 << (b - 1)),
                         radix.eq((d_mode == Mode.TOPK) & ~d_err), s_t.eq(d_thr)]
            m.d.sync += [s.eq(g) for s, g in zip(S, G)]

        # ------------------------------------------------------------ outputs
        with m.If(self.idx.ready):
            m.d.sync += self.idx.valid.eq(0)
        with m.If(adv & emit_beat):
            m.d.sync += [self.idx.valid.eq(1), self.idx.payload.n.eq(n),
                         self.idx.payload.lane.eq(lane_now), self.idx.payload.last.eq(is_last)]
            m.d.sync += [self.idx.payload.idx[s].eq(slots[s]) for s in range(P)]
        with m.If(self.mask.ready):
            m.d.sync += self.mask.valid.eq(0)
        with m.If(adv & is_last):
            m.d.sync += [self.mask.valid.eq(1), self.mask.payload.mask.eq(mask_now),
                         self.mask.payload.count.eq(count + n),
                         self.mask.payload.lane.eq(lane_now), self.mask.payload.err.eq(s_err)]
        return m


def _or_all(terms):
    """Bitwise OR of a list of values (0 when empty)."""
    out = Const(0, 1)
    for t in terms:
        out = out | t
    return out


UNIT = Unit(
    "detector", Detector,
    "threshold/top-k detector (element, 1xV, BxB) + greedy lane scheduler",
    (Param("parallel", Choice((1, 2, 4, 8, 16, 32)), "P: scores per beat"),
     Param("max_len", Range(Ref("max(parallel, 2)", lambda p: max(p["parallel"], 2)), 1024,
                            multiple_of="parallel"), "longest row, in scores"),
     Param("score_bits", Choice((2, 4, 8)), "width of a score lane"),
     Param("lanes", Range(1, 16), "scheduler lanes L")),
    sim=(SimPoint({"parallel": 4, "max_len": 32, "score_bits": 4, "lanes": 3}),
         SimPoint({"parallel": 8, "max_len": 32, "score_bits": 8, "lanes": 4})),
    formal=Formal(cover_depth=12))
