"""Progressive quantization support (DESIGN.md section 4.5, SpAtten): the bitwidth converter.

:class:`BitwidthConverter` unpacks ``p``-bit values packed densely (LSB first, straddling word
boundaries) in ``word_bits``-bit memory words into beats of ``per_beat`` aligned fields, for every
``p`` in ``widths`` chosen at run time. Bit-exact twin of
:func:`attnforge.golden.progressive_quant.convert`.

Design: a bit buffer of ``CAP = word_bits + per_beat * max(widths) - 1`` bits and a fill count.
A word is appended at bit ``cnt`` (one barrel shift); a beat is the low ``per_beat * p`` bits
and leaves by a right shift of ``per_beat * p`` (a mux over the supported widths, not a barrel
shifter). Both can happen in one cycle, so the converter sustains one word in per cycle and one
beat out per cycle whichever is slower. ``CAP`` guarantees that a word can always be accepted
when no complete beat is waiting, so the converter cannot deadlock, and a value that straddles
two words is simply complete once the second word has been appended (the straddle case that
the published SpAtten RTL gets wrong needs no special path here).

The input word that starts a plane carries ``first`` and the run-time width (an index into
``widths``): it discards leftover bits of the previous plane (fewer than one beat: ``first``
waits until every complete beat has been taken).

The top-level unit :class:`ProgressiveQuant` (MSB-plane scores, softmax, threshold, LSB fetch
over a memory request/response stream) is the bit-exact twin of
:func:`attnforge.golden.progressive_quant.progressive_query`; see its docstring.
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from ..golden.progressive_quant import PQConfig, words_for
from .numbers import requantize
from .softmax import FORMAT_PARAMS, Softmax, checked_format, softmax_latency
from .streams import RowLayout
from .unit import Param, Range, Ref, SimPoint, Synth, Unit, Widths

__all__ = ["BitwidthConverter", "word_layout", "beat_layout", "ProgressiveQuant", "cmd_layout",
           "req_layout", "resp_layout", "prob_layout", "CONVERTER_PARAMS"]


def word_layout(word_bits, n_widths):
    """Payload of the converter input: one memory word."""
    return data.StructLayout({
        "data":  word_bits,
        "width": range(max(n_widths, 2)),   # index into ``widths``, read on a first word
        "first": 1,                         # first word of a plane: drop leftover bits
    })


def beat_layout(per_beat, max_width):
    """Payload of the converter output: ``per_beat`` fields (``lanes``), zero-extended to
    ``max_width``."""
    return data.StructLayout({"lanes": data.ArrayLayout(unsigned(max_width), per_beat)})


CONVERTER_PARAMS = (
    Param("word_bits", Range(8, 256), "memory word width"),
    Param("per_beat", Range(1, 64), "fields per output beat"),
    Param("widths", Widths(1, 16), "supported field widths"),
)


class BitwidthConverter(wiring.Component):
    """Dense ``p``-bit memory words -> aligned lanes, ``p`` chosen at run time.

    Parameters
    ----------
    word_bits : int
        Memory word width ``w``, 8..256 (default 64).
    per_beat : int
        Fields per output beat, 1..64 (default 8).
    widths : tuple of int
        Supported field widths, each 1..16, at most 8 of them (default ``(2, 4, 6, 8)``).

    Members
    -------
    i : ``In(stream.Signature(word_layout(...)))``
    o : ``Out(stream.Signature(beat_layout(...)))``
    """

    def __init__(self, *, word_bits=64, per_beat=8, widths=(2, 4, 6, 8)):
        params = dict(word_bits=word_bits, per_beat=per_beat, widths=widths)
        for p in CONVERTER_PARAMS:
            p.domain.check(p.name, params[p.name], params)
        self._word_bits, self._per_beat, self._widths = word_bits, per_beat, widths
        super().__init__({
            "i": In(stream.Signature(word_layout(word_bits, len(widths)))),
            "o": Out(stream.Signature(beat_layout(per_beat, max(widths)))),
        })

    word_bits = property(lambda self: self._word_bits)
    per_beat = property(lambda self: self._per_beat)
    widths = property(lambda self: self._widths)

    @property
    def capacity(self):
        """Bits the buffer holds."""
        return self._word_bits + self._per_beat * max(self._widths) - 1

    def elaborate(self, platform):
        m = Module()
        w, L, cap = self._word_bits, self._per_beat, self.capacity
        buf = Signal(cap)
        cnt = Signal(range(cap + 1))
        sel = Signal(range(max(len(self._widths), 2)))

        def by_width(values, s=sel):
            out = values[0]
            for k in range(1, len(values)):
                out = Mux(s == k, values[k], out)
            return out

        beat_bits = Signal(range(L * max(self._widths) + 1))
        m.d.comb += beat_bits.eq(by_width([L * p for p in self._widths]))
        m.d.comb += self.o.valid.eq(cnt >= beat_bits)
        for lane in range(L):
            m.d.comb += self.o.payload.lanes[lane].eq(
                by_width([buf[lane * p:(lane + 1) * p] for p in self._widths]))

        take = self.o.valid & self.o.ready
        after_buf = Signal(cap)
        after_cnt = Signal(range(cap + 1))
        m.d.comb += [after_buf.eq(Mux(take, by_width([buf >> (L * p) for p in self._widths]),
                                      buf)),
                     after_cnt.eq(Mux(take, cnt - beat_bits, cnt))]
        first = self.i.payload.first
        m.d.comb += self.i.ready.eq(Mux(first, ~self.o.valid, cnt + w <= cap))
        with m.If(self.i.valid & self.i.ready):
            with m.If(first):
                m.d.sync += [buf.eq(self.i.payload.data), cnt.eq(w),
                             sel.eq(self.i.payload.width)]
            with m.Else():
                m.d.sync += [buf.eq(after_buf | (self.i.payload.data << after_cnt)),
                             cnt.eq(after_cnt + w)]
        with m.Else():
            m.d.sync += [buf.eq(after_buf), cnt.eq(after_cnt)]
        return m


# ====================================================================== top-level unit

def cmd_layout(dim, q_bits, n_bits, thr_bits, addr_bits):
    """Payload of the query/command stream ``cmd``: one query."""
    return data.StructLayout({
        "q":         data.ArrayLayout(signed(q_bits), dim),   # the query vector, element 0 first
        "n":         unsigned(n_bits),      # keys; 1..max_len, else an error response
        "threshold": unsigned(thr_bits),    # fetch LSBs when max(p) < threshold (out_frac frac)
        "msb_addr":  unsigned(addr_bits),   # word address of the MSB plane
        "lsb_addr":  unsigned(addr_bits),   # word address of the LSB plane
    })


def req_layout(addr_bits, count_bits):
    """Payload of the memory request stream ``req``: one whole plane."""
    return data.StructLayout({
        "plane": 1,                         # 0: MSB plane, 1: LSB plane (informational)
        "addr":  unsigned(addr_bits),       # first word address
        "count": unsigned(count_bits),      # words, returned in address order on ``resp``
    })


def resp_layout(word_bits):
    """Payload of the memory response stream ``resp``: one word."""
    return data.StructLayout({"data": unsigned(word_bits)})


def prob_layout(per_beat, out_frac):
    """Payload of the output stream ``o``: a row of probabilities (row-stream convention,
    :class:`~attnforge.rtl.streams.RowLayout`): ``data`` = probabilities (key ``b*per_beat + l``
    in lane ``l`` of beat ``b``), ``count`` valid lanes (``per_beat`` except on the last beat;
    0 on error), ``last``, ``error`` (bad request ``n = 0`` or ``n > max_len``: one beat, no
    probabilities) and the per-row extra field ``fetched`` (the LSB plane was fetched)."""
    return RowLayout(per_beat, unsigned(out_frac + 1), 0, extra={"fetched": 1})


class ProgressiveQuant(wiring.Component):
    """Progressive quantization: MSB-plane scores and softmax, LSB plane fetched on demand.

    Bit-exact twin of :func:`attnforge.golden.progressive_quant.progressive_query`.

    Parameters
    ----------
    dim : int
        Query/key dimension, 1..256 (default 8).
    macs : int
        Multipliers of the dot product (key elements per cycle), a divisor of ``dim``
        (default 4); also the bitwidth converter's ``per_beat``.
    q_bits : int
        Signed query element width, 2..16 (default 8).
    msb_bits, lsb_bits : int
        Key plane widths, 1..8 each (default 4 + 4); keys are signed ``msb_bits + lsb_bits``.
    word_bits : int
        Memory word width, a power of two 8..256 (default 64).
    score_shift : int
        Requantization shift from the integer score to the softmax input, 0..40 (default 4).
    per_beat, max_len, in_bits, in_frac, out_frac, table_bits : int
        The :class:`~attnforge.rtl.softmax.Softmax` parameters (defaults 2, 16, 16, 8, 8, 7):
        probabilities per output beat, most keys per query, softmax input format, probability
        fraction bits, exp table bits.
    addr_bits : int
        Word address width of the memory, 1..48 (default 16).

    Members
    -------
    cmd : ``In(stream.Signature(cmd_layout(...)))``
        One query per transaction (accepted only when the unit is idle).
    req : ``Out(stream.Signature(req_layout(...)))``
        One request per plane read: ``count = ceil(n * dim * p / word_bits)`` words from
        ``addr``. The MSB plane once per query, the LSB plane when fetched; never twice.
    resp : ``In(stream.Signature(resp_layout(...)))``
        The requested words, in order, any latency, any gaps.
    o : ``Out(stream.Signature(prob_layout(...)))``
        ``ceil(n / per_beat)`` beats of probabilities per query, ``last`` on the final one, the
        query's ``fetched`` flag on every beat; a bad query gets one ``error`` beat instead
        (``count = 0``, probabilities 0, no memory request).

    Design
    ------
    The response words go through a :class:`BitwidthConverter` (``per_beat = macs``, widths
    ``msb_bits`` and ``lsb_bits``) into a ``macs``-wide multiply-add: one converter beat per
    cycle, ``dim / macs`` beats per key. The trick that keeps the MSB plane from being fetched
    twice is linearity: ``k = (msb << lsb_bits) + lsb`` with an unsigned ``lsb``, so the full
    score is ``(q . msb << lsb_bits) + q . lsb``. The MSB pass stores the ``n`` integer scores
    ``q . msb`` (``max_len`` words, far smaller than the MSB plane); the LSB pass computes only
    ``q . lsb`` and adds the stored score. Scores are requantized (``rtl.numbers.requantize``),
    gathered ``per_beat`` at a time and streamed into a :class:`~attnforge.rtl.softmax.Softmax`
    submodule. The MSB-pass probabilities go to a buffer while their maximum is tracked; when the
    row ends, ``max(p) < threshold`` either requests the LSB plane (the second softmax row then
    streams straight to ``o``) or the buffer is played out on ``o``.

    Latency and throughput
    ----------------------
    One query at a time (``cmd`` is accepted when the previous query's last beat has left).
    Per plane read: the request, the memory latency, ``K = n * dim / macs`` converter beats
    (one per cycle while words keep up), the softmax row (:attr:`Softmax.latency
    <attnforge.rtl.softmax.Softmax.latency>` cycles from its last input beat to its first
    output, ``B = ceil(n / per_beat)`` beats), then ``B`` beats
    into the buffer and ``B`` out of it (MSB only) or ``B`` beats straight out (after a
    fetch). :meth:`query_cycles` is the bound the testbench asserts; measured cycles are in
    ``benchmarks/progressive_quant.py``.
    """

    def __init__(self, *, dim=8, macs=4, q_bits=8, msb_bits=4, lsb_bits=4, word_bits=64,
                 score_shift=4, per_beat=2, max_len=16, in_bits=16, in_frac=8, out_frac=8,
                 table_bits=7, addr_bits=16):
        self.record.validate(dim=dim, macs=macs, q_bits=q_bits, msb_bits=msb_bits,
                             lsb_bits=lsb_bits, word_bits=word_bits, score_shift=score_shift,
                             per_beat=per_beat, max_len=max_len, in_bits=in_bits, in_frac=in_frac,
                             out_frac=out_frac, table_bits=table_bits, addr_bits=addr_bits)
        self._dim, self._macs, self._q_bits = dim, macs, q_bits
        self._msb_bits, self._lsb_bits, self._word_bits = msb_bits, lsb_bits, word_bits
        self._score_shift, self._per_beat, self._addr_bits = score_shift, per_beat, addr_bits
        self._fmt = checked_format(per_beat=per_beat, max_len=max_len, in_bits=in_bits,
                                   in_frac=in_frac, out_frac=out_frac, table_bits=table_bits)
        super().__init__({
            "cmd":  In(stream.Signature(cmd_layout(dim, q_bits, self.n_bits, out_frac + 1,
                                                   addr_bits))),
            "req":  Out(stream.Signature(req_layout(addr_bits, self.count_bits))),
            "resp": In(stream.Signature(resp_layout(word_bits))),
            "o":    Out(stream.Signature(prob_layout(per_beat, out_frac))),
        })

    dim = property(lambda self: self._dim, doc="Query/key dimension.")
    macs = property(lambda self: self._macs, doc="Multipliers (key elements per cycle).")
    q_bits = property(lambda self: self._q_bits, doc="Query element width.")
    msb_bits = property(lambda self: self._msb_bits, doc="MSB plane width.")
    lsb_bits = property(lambda self: self._lsb_bits, doc="LSB plane width.")
    word_bits = property(lambda self: self._word_bits, doc="Memory word width.")
    score_shift = property(lambda self: self._score_shift, doc="Score requantization shift.")
    per_beat = property(lambda self: self._per_beat, doc="Probabilities per output beat.")
    max_len = property(lambda self: self._fmt.max_len, doc="Most keys per query.")
    out_frac = property(lambda self: self._fmt.out_frac, doc="Probability fraction bits.")
    addr_bits = property(lambda self: self._addr_bits, doc="Memory word address width.")
    fmt = property(lambda self: self._fmt, doc="The golden :class:`SoftmaxFormat`.")

    @property
    def config(self):
        """The golden :class:`~attnforge.golden.progressive_quant.PQConfig` of this unit."""
        return PQConfig(dim=self._dim, q_bits=self._q_bits, msb_bits=self._msb_bits,
                        lsb_bits=self._lsb_bits, word_bits=self._word_bits,
                        score_shift=self._score_shift, softmax=self._fmt)

    @property
    def n_bits(self):
        """Width of ``cmd.n`` (wide enough to express the bad values ``n > max_len``)."""
        return self.max_len.bit_length() + 1

    @property
    def count_bits(self):
        """Width of ``req.count``."""
        most = words_for(self.max_len * self._dim, max(self._msb_bits, self._lsb_bits),
                         self._word_bits)
        return most.bit_length()

    @property
    def softmax_latency(self):
        """The embedded softmax's latency (last input beat to first output beat)."""
        return softmax_latency(self._fmt)

    def plane_words(self, n, p):
        """``req.count`` of a plane of ``n`` keys of ``p``-bit elements."""
        return words_for(n * self._dim, p, self._word_bits)

    @property
    def latency(self):
        """Cycles from the command handshake to the first output beat of a one-key query that
        keeps its MSB-only probabilities, memory answering the cycle after a request, nothing
        stalled: ``W + dim / macs + 4 + softmax_latency`` with ``W = plane_words(1,
        msb_bits)`` words (the converter takes a word or gives a beat in a cycle), the command,
        the request and the response 3, the softmax (:attr:`softmax_latency`), the probability
        buffer 1 (checked by ``tests/test_progressive_quant.py::test_pq_latency``)."""
        return (self.plane_words(1, self._msb_bits) + self._dim // self._macs + 4
                + self.softmax_latency)

    def query_cycles(self, n, fetched):
        """Bound on the cycles from a query's command handshake to its last output beat when
        memory answers the cycle after a request and nothing stalls: per plane read
        ``K + W + 3 * B + softmax_latency + 8`` with ``K = n * dim / macs`` converter beats, ``W``
        words, ``B = ceil(n / per_beat)`` (each cycle the converter takes a word or gives a beat,
        so loading costs at most ``K + W``; the softmax row, the buffer and the output take
        the rest)."""
        k, b = n * self._dim // self._macs, -(-n // self._per_beat)
        planes = (self._msb_bits, self._lsb_bits) if fetched else (self._msb_bits,)
        return sum(k + self.plane_words(n, p) + 3 * b + self.softmax_latency + 8 for p in planes)

    def elaborate(self, platform):
        m = Module()
        fmt, P, D, M = self._fmt, self._per_beat, self._dim, self._macs
        S = D // M                                       # converter beats per key
        mb, lb = self._msb_bits, self._lsb_bits
        widths = (mb, lb) if mb != lb else (mb,)
        lsb_sel = len(widths) - 1
        m.submodules.conv = conv = BitwidthConverter(word_bits=self._word_bits, per_beat=M,
                                                     widths=widths)
        m.submodules.softmax = sm = Softmax(per_beat=P, max_len=fmt.max_len,
                                            in_bits=fmt.in_bits, in_frac=fmt.in_frac,
                                            out_frac=fmt.out_frac, table_bits=fmt.table_bits,
                                            index_bits=0)
        # The streams between the control logic and the submodules: words into the
        # converter, score beats into the softmax, probability beats out of it.
        words_in = conv.i.signature.flip().create(path=("words_in",))
        scores = sm.i.signature.flip().create(path=("scores",))
        probs = sm.o.signature.flip().create(path=("probs",))
        wiring.connect(m, words_in, conv.i)
        wiring.connect(m, scores, sm.i)
        wiring.connect(m, sm.o, probs)
        msb_score_bits = self._q_bits + mb + ceil_log2(D) + 1
        acc_bits = self._q_bits + max(mb, lb + 1) + ceil_log2(D) + 1
        m.submodules.scores = smem = Memory(shape=signed(msb_score_bits), depth=fmt.max_len,
                                            init=[])
        s_wp, s_rp = smem.write_port(), smem.read_port(domain="comb")
        MB = max(fmt.max_len // P, 2)                   # (2: no zero-width address)
        m.submodules.probs = pmem = Memory(shape=self.o.payload.data.shape(), depth=MB, init=[])
        p_wp, p_rp = pmem.write_port(), pmem.read_port(domain="comb")

        IDLE, ERR, REQ, LOAD, DECIDE, PASS, BUF = range(7)
        phase = Signal(range(7))
        plane = Signal()                                 # 0: MSB pass, 1: LSB pass
        q = Signal(data.ArrayLayout(signed(self._q_bits), D))
        n = Signal(range(fmt.max_len + 1))
        thr = Signal(self.out_frac + 1)
        lsb_addr = Signal(self._addr_bits)
        req_addr = Signal(self._addr_bits)
        req_count = Signal(self.count_bits)

        def words(nn, p):                                # ceil(n * dim * p / w)
            return (nn * (D * p) + (self._word_bits - 1)) >> exact_log2(self._word_bits)

        # ------------------------------------------------------------ command, request
        cp = self.cmd.payload
        m.d.comb += self.cmd.ready.eq(phase == IDLE)
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [q.eq(cp.q), n.eq(cp.n), thr.eq(cp.threshold),
                         lsb_addr.eq(cp.lsb_addr), plane.eq(0),
                         req_addr.eq(cp.msb_addr), req_count.eq(words(cp.n, mb))]
            with m.If((cp.n == 0) | (cp.n > fmt.max_len)):
                m.d.sync += phase.eq(ERR)
            with m.Else():
                m.d.sync += phase.eq(REQ)

        m.d.comb += [self.req.valid.eq(phase == REQ), self.req.payload.plane.eq(plane),
                     self.req.payload.addr.eq(req_addr), self.req.payload.count.eq(req_count)]

        # ------------------------------------------------------------ words -> converter
        words_left = Signal(self.count_bits)
        first = Signal()                                 # the next word starts the plane
        started = Signal()                               # converter beats belong to this plane
        taking = (phase == LOAD) & (words_left != 0)
        m.d.comb += [words_in.valid.eq(self.resp.valid & taking),
                     self.resp.ready.eq(words_in.ready & taking),
                     words_in.payload.data.eq(self.resp.payload.data),
                     words_in.payload.first.eq(first),
                     words_in.payload.width.eq(Mux(plane, lsb_sel, 0))]
        with m.If(self.req.valid & self.req.ready):
            m.d.sync += [phase.eq(LOAD), words_left.eq(req_count), first.eq(1), started.eq(0)]
        with m.If(words_in.valid & words_in.ready):
            m.d.sync += [words_left.eq(words_left - 1), first.eq(0)]
            with m.If(first):
                m.d.sync += started.eq(1)

        # ------------------------------------------------------------ dot product
        kb = Signal(range(max(S, 2)))                    # beat within the key
        key = Signal(range(fmt.max_len))
        acc = Signal(signed(acc_bits))
        gvalid = Signal()                                # gather register full (softmax beat)
        key_end = kb == S - 1
        # Converter beats before this plane's first word are the previous plane's padding:
        # drained (ready) and ignored.
        m.d.comb += conv.o.ready.eq(~started | ((phase == LOAD) & ~(gvalid & key_end)))
        beat = conv.o.valid & conv.o.ready & started
        fields = conv.o.payload.lanes
        partial = 0
        for j in range(M):
            qj = q[j]
            for s in range(1, S):
                qj = Mux(kb == s, q[s * M + j], qj)
            v = Mux(plane, fields[j][:lb], fields[j][:mb].as_signed())
            partial = partial + qj * v
        total = Signal(signed(acc_bits))
        m.d.comb += total.eq(acc + partial)
        full = Signal(signed(acc_bits + mb + lb))
        m.d.comb += [s_wp.addr.eq(key), s_wp.data.eq(total), s_rp.addr.eq(key),
                     full.eq(Mux(plane, (s_rp.data << lb) + total, total << lb))]
        x = Signal(signed(fmt.in_bits))
        m.d.comb += x.eq(requantize(full, self._score_shift, fmt.in_bits))

        g = [Signal(signed(fmt.in_bits), name=f"g{j}") for j in range(P)]
        gcnt = Signal(range(P + 1))
        glast = Signal()
        sp = scores.payload
        m.d.comb += [scores.valid.eq(gvalid), sp.count.eq(gcnt), sp.last.eq(glast)]
        for j in range(P):
            m.d.comb += sp.data[j].eq(g[j])
        with m.If(scores.valid & scores.ready):
            m.d.sync += [gvalid.eq(0), gcnt.eq(0)]

        with m.If(beat):
            with m.If(key_end):
                row_end = key == n - 1
                m.d.comb += s_wp.en.eq(~plane)
                for j in range(P):
                    with m.If(gcnt == j):
                        m.d.sync += g[j].eq(x)
                m.d.sync += [kb.eq(0), acc.eq(0), key.eq(key + 1), gcnt.eq(gcnt + 1)]
                with m.If((gcnt == P - 1) | row_end):
                    m.d.sync += [gvalid.eq(1), glast.eq(row_end)]
                with m.If(row_end):
                    m.d.sync += [key.eq(0), started.eq(0),
                                 phase.eq(Mux(plane, PASS, DECIDE))]
            with m.Else():
                m.d.sync += [kb.eq(kb + 1), acc.eq(total)]

        # ------------------------------------------------------------ MSB probabilities
        ob = Signal(range(MB))                           # beats buffered / played out
        pmax = Signal(self.out_frac + 1)
        plast = Signal(range(MB))
        pcount = Signal(range(P + 1))
        so = probs.payload
        new_max = pmax
        for j in range(P):
            new_max = Mux(so.data[j] > new_max, so.data[j], new_max)
        m.d.comb += [p_wp.addr.eq(ob), p_wp.data.eq(so.data)]
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [pmax.eq(0), ob.eq(0)]
        with m.If((phase == DECIDE) & probs.valid):
            m.d.comb += [probs.ready.eq(1), p_wp.en.eq(1)]
            m.d.sync += [pmax.eq(new_max), ob.eq(ob + 1)]
            with m.If(so.last):
                m.d.sync += [plast.eq(ob), pcount.eq(so.count), ob.eq(0)]
                with m.If(new_max < thr):
                    m.d.sync += [plane.eq(1), req_addr.eq(lsb_addr),
                                 req_count.eq(words(n, lb)), phase.eq(REQ)]
                with m.Else():
                    m.d.sync += phase.eq(BUF)

        # ------------------------------------------------------------ output
        op = self.o.payload
        m.d.comb += p_rp.addr.eq(ob)
        with m.If(phase == ERR):
            m.d.comb += [self.o.valid.eq(1), op.error.eq(1), op.last.eq(1)]
        with m.Elif(phase == PASS):
            m.d.comb += [self.o.valid.eq(probs.valid), probs.ready.eq(self.o.ready),
                         op.data.eq(so.data), op.count.eq(so.count), op.last.eq(so.last),
                         op.fetched.eq(1)]
        with m.Elif(phase == BUF):
            m.d.comb += [self.o.valid.eq(1), op.data.eq(p_rp.data),
                         op.count.eq(Mux(ob == plast, pcount, P)), op.last.eq(ob == plast)]
        with m.If(self.o.valid & self.o.ready):
            with m.If(phase == BUF):
                m.d.sync += ob.eq(ob + 1)
            with m.If(op.last):
                m.d.sync += [phase.eq(IDLE), ob.eq(0)]
        return m


UNIT = Unit(
    "progressive_quant", ProgressiveQuant,
    "progressive quantization: MSB-plane softmax, LSB plane fetched below a threshold",
    (Param("dim", Range(1, 256), "query/key dimension"),
     Param("macs", Range(1, Ref("dim"), divides="dim"), "multipliers (key elements per cycle)"),
     Param("q_bits", Range(2, 16), "signed query element width"),
     Param("msb_bits", Range(1, 8), "MSB plane width"),
     Param("lsb_bits", Range(1, 8), "LSB plane width"),
     Param("word_bits", Range(8, 256, pow2=True), "memory word width"),
     Param("score_shift", Range(0, 40), "score requantization shift"),
     *FORMAT_PARAMS,
     Param("addr_bits", Range(1, 48), "memory word address width")),
    sim=(SimPoint(), SimPoint({"dim": 6, "macs": 3, "q_bits": 6, "msb_bits": 6, "lsb_bits": 4,
                               "word_bits": 32, "per_beat": 3, "max_len": 12, "in_bits": 12,
                               "in_frac": 4, "out_frac": 6, "score_shift": 2})),
    synth=Synth(boards=("ulx3s-85f", "orangecrab-r0.2")))
