"""Streaming, max-subtracted, fixed-point softmax at full rate (DESIGN.md section 4.6; SpAtten /
DOTA multi-function unit). Bit-exact twin of :mod:`attnforge.golden.softmax`, whose docstring is
the numeric contract (statistics pass with an online normalizer, then normalization).

Design
------
Every row is read once. An input beat is accepted, written into the row buffer (one
``amaranth.lib.memory.Memory`` used as a FIFO of beats) and, in the same cycle, handed to the
statistics pipeline; the output side reads a row's beats back once the row's statistics are
known and normalizes them on the way out. The blocks, each a ``wiring.Component`` with a
signature built from its parameters:

* :class:`ExpUnit` -- ``e = exp_fx(x, K)``: one constant multiply by ``log2(e)``, subtract from
  the reference octave, round, split into shift and table index, ROM, rounding barrel shift.
* :class:`RowStats` -- the statistics pass, fully pipelined (5 stages), one beat per cycle,
  no back-pressure: running reference ``K`` (prefix maximum of ``oct(x) + 1`` over the beat's
  lanes), one :class:`ExpUnit` per lane at its lane's prefix reference, and the online sum
  ``S = (S >> (K' - K)) + e`` folded over the lanes in row order -- computed exactly as
  ``(S + sum_j e_j << B_j) >> A`` so that the loop through ``S`` is one add and one shift.
  It emits ``(K, S)`` and a tag on each row's last beat.
* :class:`Reciprocal` -- ``R = floor(2**Q / S)``: a pipelined restoring divider,
  ``steps`` quotient bits per stage, one division accepted every cycle (a row of one beat
  needs one per cycle). The dividend is a power of two, so only the divisor travels.
* :class:`Normalize` -- ``p = min(round_shift(exp_fx(x, K) * R, Q - out_frac), 2**out_frac)``
  for a beat of scores; the same component can sit in a consumer (the lane's A*V) that holds
  the row statistics instead of a row of probabilities.

Row statistics wait in a small FIFO (a ``Memory`` too) until the output side has played out
the row. Because every row holds at least one beat in the row buffer until its statistics are
popped, neither the statistics pipeline nor the divider ever has to stall: only the input
(buffer full) and the output (``o.ready``) do. An output stall freezes the two-stage output
pipeline (read port enable, output register) and nothing else.

Latency and throughput
----------------------
The first output beat of a row is valid :attr:`Softmax.latency` cycles after the cycle its last
input beat was accepted (unit idle before: 5 statistics stages, the divider's stages, the
statistics FIFO, the read port, the output register). The row buffer holds
``max_beats + latency + 2`` beats, enough for a whole row plus the beats that arrive while its
statistics are being formed, so back-to-back rows of any length up to ``max_len`` stream at one
beat per cycle in and out: ``per_beat`` elements per cycle for full beats, at every row length
(a row of one beat included).
"""

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..golden.softmax import SoftmaxFormat
from .numbers import round_shift
from .streams import RowLayout
from .unit import Formal, Param, Range, Ref, SimPoint, Synth, Unit

__all__ = ["Softmax", "ExpUnit", "RowStats", "Reciprocal", "Normalize", "ref_shape",
           "FORMAT_PARAMS", "INDEX_BITS", "checked_format", "softmax_latency",
           "in_layout", "out_layout", "norm_stats_layout"]


def ref_shape(fmt):
    """Signed shape of a reference octave ``K`` (including the "no element yet" value)."""
    lo, hi = fmt.ref_range
    return signed(max((lo - 1).bit_length(), hi.bit_length()) + 1)


class ExpUnit(wiring.Component):
    """Combinational ``e = exp_fx(x, ref)`` (golden steps 1-3) for one element.

    Ports: ``x`` (signed ``in_bits`` score), ``ref`` (reference octave, :func:`ref_shape`),
    ``e`` (unsigned ``exp_frac + 1``). ``ref`` must lie above ``oct(x)``; otherwise ``e`` is
    undefined (callers mask such lanes)."""

    def __init__(self, fmt):
        self.fmt = fmt
        super().__init__({"x": In(signed(fmt.in_bits)), "ref": In(ref_shape(fmt)),
                          "e": Out(unsigned(fmt.exp_frac + 1))})

    def elaborate(self, platform):
        m, fmt = Module(), self.fmt
        d = Signal(unsigned(fmt.in_bits + fmt.log2e.bit_length() + 1))
        m.d.comb += d.eq((self.ref << fmt.oct_shift) - self.x * Const(fmt.log2e))
        t = Signal(unsigned(len(d) - fmt.t_shift + 1))
        m.d.comb += t.eq(round_shift(d, fmt.t_shift))
        cap = fmt.exp_frac + 1
        n = t >> fmt.table_bits
        n_c = Signal(range(cap + 1))
        m.d.comb += n_c.eq(Mux(n > cap, cap, n))
        table = Array(Const(int(v), unsigned(fmt.exp_frac + 1)) for v in fmt.table)
        v = Signal(unsigned(fmt.exp_frac + 1))
        m.d.comb += [v.eq(table[t[:fmt.table_bits]]), self.e.eq(round_shift(v, n_c))]
        return m


def stats_in_layout(fmt, per_beat, tag):
    return data.StructLayout({"data": data.ArrayLayout(signed(fmt.in_bits), per_beat),
                              "count": range(per_beat + 1), "last": 1, "tag": tag})


def stats_out_layout(fmt, tag):
    """``value`` = the row's sum ``S``; ``tag`` = its reference ``ref`` and the user tag."""
    return data.StructLayout({"value": unsigned(fmt.sum_bits),
                              "tag": data.StructLayout({"ref": ref_shape(fmt), "user": tag})})


class RowStats(wiring.Component):
    """The statistics pass: running reference and online sum over the beats of each row.

    Ports (streams without back-pressure, one beat per cycle at most):
    ``i``: ``data[per_beat]``, ``count`` (valid lanes), ``last``, ``tag`` (any shape, read on
    the last beat); ``o``: one transaction per row, 5 cycles after its last beat:
    ``value = S``, ``tag.ref = K``, ``tag.user`` = the last beat's ``tag``.
    """

    LATENCY = 5

    def __init__(self, fmt, per_beat, tag=unsigned(1)):
        self.fmt, self.per_beat, self.tag = fmt, per_beat, tag
        super().__init__({
            "i": In(stream.Signature(stats_in_layout(fmt, per_beat, tag), always_ready=True)),
            "o": Out(stream.Signature(stats_out_layout(fmt, tag), always_ready=True))})

    def elaborate(self, platform):
        m, fmt, P = Module(), self.fmt, self.per_beat
        rs = ref_shape(fmt)
        none = fmt.ref_range[0] - 1
        # Stage 1: register the beat, mark the first beat of a row.
        open_ = Signal()
        s1 = Signal(stats_in_layout(fmt, P, self.tag))
        v1, first1 = Signal(), Signal()
        m.d.sync += [v1.eq(self.i.valid), s1.eq(self.i.payload), first1.eq(~open_)]
        with m.If(self.i.valid):
            m.d.sync += open_.eq(~self.i.payload.last)
        # Stage 2: prefix references K_1..K_P (loop-carried K), shifts a_j = K_{j+1} - K_j.
        k_run = Signal(rs, init=none)
        ks = [Mux(first1, none, k_run)]
        for j in range(P):
            o = Signal(rs, name=f"oct{j}")
            m.d.comb += o.eq(((s1.data[j] * Const(fmt.log2e)) >> fmt.oct_shift) + 1)
            ks.append(Mux((s1.count > j) & (o > ks[-1]), o, ks[-1]))
        with m.If(v1):
            m.d.sync += k_run.eq(ks[-1])
        sbits = fmt.sum_bits
        shift_shape = range(sbits + 1)
        k2 = [Signal(rs, name=f"k{j}") for j in range(P + 1)]
        a2 = [Signal(shift_shape, name=f"a{j}") for j in range(P)]
        x2 = Signal.like(s1.data)
        c2, v2, first2, last2 = Signal.like(s1.count), Signal(), Signal(), Signal()
        tag2 = Signal(self.tag)
        m.d.sync += [v2.eq(v1), x2.eq(s1.data), c2.eq(s1.count), first2.eq(first1),
                     last2.eq(s1.last), tag2.eq(s1.tag)]
        for j in range(P + 1):
            m.d.sync += k2[j].eq(ks[j])
        for j in range(P):
            step = ks[j + 1] - ks[j]
            if j == 0:                                  # a row's first shift acts on S = 0
                step = Mux(first1, 0, step)
            m.d.sync += a2[j].eq(Mux(step > sbits, sbits, step))
        # Stage 3: one exp unit per lane at its prefix reference; invalid lanes give 0.
        e3 = [Signal(unsigned(fmt.exp_frac + 1), name=f"e{j}") for j in range(P)]
        a3 = [Signal(shift_shape, name=f"a3_{j}") for j in range(P)]
        v3, first3, last3 = Signal(), Signal(), Signal()
        k3, tag3 = Signal(rs), Signal(self.tag)
        for j in range(P):
            m.submodules[f"exp{j}"] = ex = ExpUnit(fmt)
            m.d.comb += [ex.x.eq(x2[j]), ex.ref.eq(k2[j + 1])]
            m.d.sync += [e3[j].eq(Mux(c2 > j, ex.e, 0)), a3[j].eq(a2[j])]
        m.d.sync += [v3.eq(v2), first3.eq(first2), last3.eq(last2), k3.eq(k2[P]),
                     tag3.eq(tag2)]
        # Stage 4: the beat's own part of the online sum. The per-element chain
        # S_{j+1} = (S_j >> a_j) + e_j adds integers between floor shifts, so it equals
        # (S_0 + sum_j e_j << B_j) >> A with B_j = a_0 + ... + a_j, A = B_{P-1}: exact, and
        # everything but S_0 is known before the loop. (a_j <= sum_bits: a larger shift gives 0
        # all the same, so the clamp keeps the widths finite without changing a bit.)
        b_bits = P * sbits
        n_bits = fmt.exp_frac + 1 + b_bits
        n4 = Signal(unsigned(n_bits))
        a4 = Signal(range(b_bits + 1))
        v4, first4, last4 = Signal(), Signal(), Signal()
        k4, tag4 = Signal(rs), Signal(self.tag)
        acc_b, total = Const(0, range(b_bits + 1)), 0
        for j in range(P):
            acc_b = acc_b + a3[j]
            bj = Signal(range(b_bits + 1), name=f"b{j}")
            m.d.comb += bj.eq(acc_b)
            total = total + (e3[j] << bj)
        m.d.sync += [n4.eq(total), a4.eq(acc_b), v4.eq(v3), first4.eq(first3),
                     last4.eq(last3), k4.eq(k3), tag4.eq(tag3)]
        # Stage 5: the loop: one wide add and one right shift per beat.
        s_run = Signal(unsigned(sbits))
        s_new = Signal(unsigned(sbits))
        m.d.comb += s_new.eq((Mux(first4, 0, s_run) + n4) >> a4)
        with m.If(v4):
            m.d.sync += s_run.eq(s_new)
        op = self.o.payload
        m.d.sync += [self.o.valid.eq(v4 & last4), op.value.eq(s_new), op.tag.ref.eq(k4),
                     op.tag.user.eq(tag4)]
        return m


class Reciprocal(wiring.Component):
    """Pipelined restoring divider ``r = floor(2**q / s)`` (``2**quotient_bits - 1`` for
    ``s = 0``), one division accepted per cycle, no back-pressure.

    Parameters: ``q`` (dividend ``2**q``), ``divisor_bits``, ``quotient_bits`` (``2**q / s``
    must be below ``2**quotient_bits``: the caller guarantees ``s > 2**(q - quotient_bits)``),
    ``steps`` (quotient bits per pipeline stage), ``tag`` (shape carried alongside).
    Ports: ``i`` = ``{value: s, tag}``, ``o`` = ``{value: r, tag}``, :attr:`latency` cycles
    later."""

    def __init__(self, *, q, divisor_bits, quotient_bits, steps=4, tag=unsigned(1)):
        if not 1 <= quotient_bits <= q:
            raise ValueError(f"quotient_bits must be in [1, q = {q}], not {quotient_bits}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, not {steps}")
        self.q, self.divisor_bits, self.quotient_bits = q, divisor_bits, quotient_bits
        self.steps, self.tag = steps, tag
        super().__init__({
            "i": In(stream.Signature(data.StructLayout(
                {"value": unsigned(divisor_bits), "tag": tag}), always_ready=True)),
            "o": Out(stream.Signature(data.StructLayout(
                {"value": unsigned(quotient_bits), "tag": tag}), always_ready=True))})

    @property
    def latency(self):
        """Pipeline stages (cycles from ``i`` to ``o``)."""
        return -(-self.quotient_bits // self.steps)

    def elaborate(self, platform):
        m = Module()
        rem_bits = self.divisor_bits + 1
        valid, rem, quo = self.i.valid, Const(1 << (self.q - self.quotient_bits), rem_bits), \
            Const(0, self.quotient_bits)
        div, tag = self.i.payload.value, self.i.payload.tag
        left = self.quotient_bits
        for k in range(self.latency):
            for _ in range(min(self.steps, left)):
                r2 = (rem << 1)[:rem_bits + 1]
                ge = r2 >= div
                rem = Mux(ge, r2 - div, r2)[:rem_bits]
                quo = ((quo << 1) | ge)[:self.quotient_bits]
                left -= 1
            regs = (Signal(name=f"v{k}"), Signal(rem_bits, name=f"rem{k}"),
                    Signal(self.quotient_bits, name=f"quo{k}"),
                    Signal(self.divisor_bits, name=f"div{k}"), Signal(self.tag, name=f"tag{k}"))
            m.d.sync += [r.eq(v) for r, v in zip(regs, (valid, rem, quo, div, tag))]
            valid, rem, quo, div, tag = regs
        m.d.comb += [self.o.valid.eq(valid), self.o.payload.value.eq(quo),
                     self.o.payload.tag.eq(tag)]
        return m


def norm_stats_layout(fmt):
    """Per-row statistics a normalizer needs: reference octave ``ref`` and reciprocal
    ``recip``."""
    return data.StructLayout({"ref": ref_shape(fmt), "recip": unsigned(fmt.recip_bits)})


class Normalize(wiring.Component):
    """Combinational normalization of ``per_beat`` scores of one row (golden
    :func:`~attnforge.golden.softmax.normalize`): ``x[per_beat]`` + ``stats`` (``ref``,
    ``recip``) -> ``p[per_beat]`` (unsigned ``out_frac + 1``)."""

    def __init__(self, fmt, per_beat=1):
        self.fmt, self.per_beat = fmt, per_beat
        super().__init__({
            "x": In(data.ArrayLayout(signed(fmt.in_bits), per_beat)),
            "stats": In(norm_stats_layout(fmt)),
            "p": Out(data.ArrayLayout(unsigned(fmt.out_frac + 1), per_beat))})

    def elaborate(self, platform):
        m, fmt = Module(), self.fmt
        one = 1 << fmt.out_frac
        for j in range(self.per_beat):
            m.submodules[f"exp{j}"] = ex = ExpUnit(fmt)
            m.d.comb += [ex.x.eq(self.x[j]), ex.ref.eq(self.stats.ref)]
            p = Signal(unsigned(fmt.exp_frac + fmt.recip_bits + 2), name=f"p{j}")
            m.d.comb += [p.eq(round_shift(ex.e * self.stats.recip, fmt.norm_shift)),
                         self.p[j].eq(Mux(p > one, one, p))]
        return m


#: The softmax's numeric parameters, shared by every unit that embeds a softmax.
FORMAT_PARAMS = (
    Param("per_beat", Range(1, 16), "elements per beat"),
    Param("max_len", Range(Ref("per_beat"), 4096, multiple_of="per_beat"), "longest row"),
    Param("in_bits", Range(2, 24), "signed input score width"),
    Param("in_frac", Range(0, Ref("in_bits")), "input fraction bits"),
    Param("out_frac", Range(2, 12), "probability fraction bits"),
    Param("table_bits", Range(2, 10), "exp table index bits (log2 of its size)"),
)
INDEX_BITS = Param("index_bits", Range(0, 24), "column index width (0: no index field)")
RECIP_STEPS = Param("recip_steps", Range(1, 32), "quotient bits per divider pipeline stage")


def checked_format(*, per_beat, max_len, in_bits, in_frac, out_frac, table_bits):
    """Validate the softmax generator parameters (``ValueError`` naming the bad one) and
    return their :class:`SoftmaxFormat`; shared by every unit that embeds a softmax."""
    params = dict(per_beat=per_beat, max_len=max_len, in_bits=in_bits, in_frac=in_frac,
                  out_frac=out_frac, table_bits=table_bits)
    for p in FORMAT_PARAMS:
        p.domain.check(p.name, params[p.name], params)
    return SoftmaxFormat(in_bits=in_bits, in_frac=in_frac, out_frac=out_frac,
                         table_bits=table_bits, max_len=max_len)


def softmax_latency(fmt, recip_steps=3):
    """:attr:`Softmax.latency` of a softmax of format ``fmt``: statistics 5 cycles, divider
    ``ceil(recip_bits / recip_steps)``, statistics FIFO 1, read port 1, output register 1."""
    return RowStats.LATENCY + -(-fmt.recip_bits // recip_steps) + 3


def in_layout(per_beat, in_bits, index_bits):
    """Payload of the input stream ``i`` (row convention; an ``error`` row stays one)."""
    return RowLayout(per_beat, signed(in_bits), index_bits)


def out_layout(per_beat, out_frac, index_bits):
    """Payload of the output stream ``o`` (row convention, ``data`` = probabilities)."""
    return RowLayout(per_beat, unsigned(out_frac + 1), index_bits)


class Softmax(wiring.Component):
    """Streaming fixed-point softmax over rows of run-time length (dense or sparse), one beat
    per cycle in and out.

    Parameters
    ----------
    per_beat : int
        Elements per beat ``P``, 1..16 (default 4).
    max_len : int
        Longest row, a multiple of ``per_beat``, ``per_beat``..4096 (default 64); a row has at
        most ``max_beats = max_len / per_beat`` beats.
    in_bits, in_frac : int
        Input scores: signed ``in_bits`` (2..24, default 16) with ``in_frac`` fraction bits.
    out_frac : int
        Probability fraction bits, 2..12 (default 8); outputs are ``out_frac + 1`` bits wide.
    table_bits : int
        Fraction bits of the base-2 exponent (log2 of the ``2**(-f)`` table size), 2..10
        (default 7: max error 0.81 LSB at ``out_frac = 8``; 6 exceeds 1 LSB).
    index_bits : int
        Width of the column index each element carries, 0..24 (default 12; 0: no index).
    recip_steps : int
        Quotient bits per divider pipeline stage, 1..32 (default 3: 7 stages at the defaults,
        logic depth below the normalizer's).

    Members
    -------
    i : ``In(row_signature(per_beat, signed(in_bits), index_bits))``
        Row beats (partial beats anywhere, ``count`` valid lanes, ``last`` ends the row;
        ``error`` on any beat marks the row as an error row).
    o : ``Out(row_signature(per_beat, unsigned(out_frac + 1), index_bits))``
        One output beat per kept input beat, same counts and lane positions; ``error`` on every
        beat of a row that exceeded ``max_len`` elements or ``max_beats`` beats, or that had
        ``error`` on an input beat (an error propagates: a consumer of a rejected request's
        empty row answers with an error row too).
    """

    def __init__(self, *, per_beat=4, max_len=64, in_bits=16, in_frac=8, out_frac=8,
                 table_bits=7, index_bits=12, recip_steps=3):
        self.record.validate(per_beat=per_beat, max_len=max_len, in_bits=in_bits,
                             in_frac=in_frac, out_frac=out_frac, table_bits=table_bits,
                             index_bits=index_bits, recip_steps=recip_steps)
        self._per_beat, self._index_bits, self._recip_steps = per_beat, index_bits, recip_steps
        self._fmt = checked_format(per_beat=per_beat, max_len=max_len, in_bits=in_bits,
                                   in_frac=in_frac, out_frac=out_frac, table_bits=table_bits)
        super().__init__({
            "i": In(stream.Signature(in_layout(per_beat, in_bits, index_bits))),
            "o": Out(stream.Signature(out_layout(per_beat, out_frac, index_bits))),
        })

    per_beat = property(lambda self: self._per_beat, doc="Elements per beat.")
    max_len = property(lambda self: self._fmt.max_len, doc="Longest row.")
    in_bits = property(lambda self: self._fmt.in_bits, doc="Input score width.")
    in_frac = property(lambda self: self._fmt.in_frac, doc="Input fraction bits.")
    out_frac = property(lambda self: self._fmt.out_frac, doc="Output fraction bits.")
    table_bits = property(lambda self: self._fmt.table_bits, doc="Exp table index bits.")
    index_bits = property(lambda self: self._index_bits, doc="Column index width.")
    recip_steps = property(lambda self: self._recip_steps, doc="Divider bits per stage.")
    fmt = property(lambda self: self._fmt, doc="The golden :class:`SoftmaxFormat`.")

    @property
    def max_beats(self):
        return self.max_len // self.per_beat

    @property
    def recip_stages(self):
        """Pipeline stages of the divider."""
        return -(-self._fmt.recip_bits // self._recip_steps)

    @property
    def latency(self):
        """Cycles from the acceptance of a row's last input beat to its first output beat
        being valid (unit idle before): :func:`softmax_latency`."""
        return softmax_latency(self._fmt, self._recip_steps)

    @property
    def depth(self):
        """Row buffer depth in beats."""
        return self.max_beats + self.latency + 2

    def _tag(self):
        return data.StructLayout({"error": 1, "beats": range(self.max_beats + 1)})

    def elaborate(self, platform):
        m = Module()
        fmt, P, MB, D = self._fmt, self._per_beat, self.max_beats, self.depth
        tag = self._tag()
        m.submodules.stats = stats = RowStats(fmt, P, tag)
        m.submodules.recip = recip = Reciprocal(
            q=fmt.recip_q, divisor_bits=fmt.sum_bits, quotient_bits=fmt.recip_bits,
            steps=self._recip_steps, tag=stats.o.payload.tag.shape())
        wiring.connect(m, stats.o, recip.i)
        m.submodules.norm = norm = Normalize(fmt, P)

        word = {"data": data.ArrayLayout(signed(fmt.in_bits), P), "count": range(P + 1)}
        if self._index_bits:
            word["index"] = data.ArrayLayout(unsigned(self._index_bits), P)
        m.submodules.buf = buf = Memory(shape=data.StructLayout(word), depth=D, init=[])
        wp, rp = buf.write_port(), buf.read_port()
        row_l = data.StructLayout({"stats": norm_stats_layout(fmt), "tag": tag})
        m.submodules.rows = rows = Memory(shape=row_l, depth=D, init=[])
        rwp, rrp = rows.write_port(), rows.read_port(domain="comb")

        def inc(ptr):
            return Mux(ptr == D - 1, 0, ptr + 1)

        # ------------------------------------------------ input: framing, buffer, statistics
        occ = Signal(range(D + 1))                      # beats in the buffer
        wr, rd = Signal(range(D)), Signal(range(D))
        beats = Signal(range(MB + 1))                   # kept beats of the open row
        err = Signal()
        ip = self.i.payload
        m.d.comb += self.i.ready.eq(occ != D)
        n_in = Signal(range(P + 1))                     # valid lanes (a count above P means P)
        if (1 << len(ip.count)) - 1 > P:
            m.d.comb += n_in.eq(Mux(ip.count > P, P, ip.count))
        else:
            m.d.comb += n_in.eq(ip.count)
        # At most max_beats beats of at most P elements: never more than max_len elements, so
        # the beat limit is the only one to check; later beats are dropped and flagged.
        keep = beats != MB
        take = self.i.valid & self.i.ready
        row_err = err | ~keep | ip.error
        sp = stats.i.payload
        m.d.comb += [wp.addr.eq(wr), wp.data.count.eq(n_in),
                     sp.count.eq(Mux(keep, n_in, 0)), sp.last.eq(ip.last),
                     sp.tag.error.eq(row_err), sp.tag.beats.eq(beats + keep)]
        for j in range(P):
            lane_ok = n_in > j
            m.d.comb += [wp.data.data[j].eq(Mux(lane_ok, ip.data[j], 0)),
                         sp.data[j].eq(ip.data[j])]
            if self._index_bits:
                m.d.comb += wp.data.index[j].eq(Mux(lane_ok, ip.index[j], 0))
        with m.If(take):
            m.d.comb += [wp.en.eq(keep), stats.i.valid.eq(keep | ip.last)]
            m.d.sync += [beats.eq(beats + keep), err.eq(row_err)]
            with m.If(keep):
                m.d.sync += wr.eq(inc(wr))
            with m.If(ip.last):
                m.d.sync += [beats.eq(0), err.eq(0)]

        # ------------------------------------------------ statistics FIFO
        rwr, rrd = Signal(range(D)), Signal(range(D))
        nrows = Signal(range(D + 1))
        ro = recip.o.payload
        m.d.comb += [rwp.addr.eq(rwr), rwp.en.eq(recip.o.valid),
                     rwp.data.stats.ref.eq(ro.tag.ref), rwp.data.stats.recip.eq(ro.value),
                     rwp.data.tag.eq(ro.tag.user), rrp.addr.eq(rrd)]
        with m.If(recip.o.valid):
            m.d.sync += rwr.eq(inc(rwr))

        # ------------------------------------------------ output: read, normalize, register
        adv = ~self.o.valid | self.o.ready
        ob = Signal(range(MB + 1))                      # beat of the head row being read
        head = rrp.data
        issue = adv & (occ != 0) & (nrows != 0)
        v1, last1, err1 = Signal(), Signal(), Signal()
        st1 = Signal(norm_stats_layout(fmt))
        m.d.comb += [rp.addr.eq(rd), rp.en.eq(adv)]
        pop = issue & (ob + 1 == head.tag.beats)
        with m.If(adv):
            m.d.sync += [v1.eq(issue), last1.eq(pop), err1.eq(head.tag.error),
                         st1.eq(head.stats)]
        with m.If(issue):
            m.d.sync += [rd.eq(inc(rd)), ob.eq(Mux(pop, 0, ob + 1))]
            with m.If(pop):
                m.d.sync += rrd.eq(inc(rrd))
        m.d.sync += [occ.eq(occ + (take & keep) - issue),
                     nrows.eq(nrows + recip.o.valid - pop)]

        m.d.comb += [norm.x.eq(rp.data.data), norm.stats.eq(st1)]
        op = self.o.payload
        with m.If(adv):
            m.d.sync += [self.o.valid.eq(v1), op.count.eq(rp.data.count), op.last.eq(last1),
                         op.error.eq(err1)]
            for j in range(P):
                m.d.sync += op.data[j].eq(Mux(rp.data.count > j, norm.p[j], 0))
            if self._index_bits:
                m.d.sync += op.index.eq(rp.data.index)
        return m


UNIT = Unit(
    "softmax", Softmax, "streaming max-subtracted fixed-point softmax (dense or sparse rows)",
    FORMAT_PARAMS + (INDEX_BITS, RECIP_STEPS),
    sim=(SimPoint(), SimPoint({"per_beat": 3, "max_len": 12, "in_bits": 8, "in_frac": 4,
                               "out_frac": 6, "table_bits": 8, "index_bits": 4,
                               "recip_steps": 2})),
    formal=Formal(cover_depth=24),
    synth=Synth(boards=("ulx3s-85f",)))
