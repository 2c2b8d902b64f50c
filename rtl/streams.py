"""The row-stream convention every unit that carries rows uses, and the stream blocks built on it.

A *row* (a row of scores, of probabilities, of kept column indices ...) travels over an
``amaranth.lib.stream`` interface as a sequence of *beats* of up to ``per_beat`` elements.
The payload is a :class:`RowLayout`:

``data``   ``ArrayLayout(value_shape, per_beat)`` -- the elements' values (absent for rows that
           carry indices only);
``index``  ``ArrayLayout(unsigned(index_bits), per_beat)`` -- each element's column index
           (absent for dense rows whose position is implied by the order);
``count``  valid lanes of this beat, ``0..per_beat``: lanes ``0 .. count-1`` hold elements, in
           row order; lanes at and above ``count`` are zero (producers drive them so, consumers
           ignore them);
``last``   this beat ends the row;
``error``  the row is the answer to a bad request or was handled under a documented error
           condition (e.g. truncated); a rejected request is answered by one beat with
           ``count = 0, last = 1, error = 1``. Like the extras it is a per-row fact: a producer
           keeps it constant over the beats of a row (so a block that forwards a beat before
           the row has ended never forwards a stale flag), and a consumer answers an error
           row with an error row;
plus unit-specific *extra* fields that hold per-row facts (e.g. the top-k's ``kth``, the
scheduler's ``lane``), constant over the beats of a row.

Any beat may be partial (a sparse producer such as the detector emits as many kept elements as
it found), and a row may be empty (one beat, ``count = 0, last = 1``). A *dense* row stream
additionally guarantees that every beat but the last is full; the blocks in this module turn
one into the other.

Blocks (each a ``wiring.Component`` whose signature comes from its parameters; join them with
``wiring.connect``; reference models over lists of beats in :mod:`attnforge.golden.streams`):

:class:`StreamFIFO` ``(shape, depth, buffered=True)``
    a queue of ``depth`` beats of any payload over ``amaranth.lib.fifo``, with ``level``;
    latency 2 (buffered) / 1, one beat per cycle from depth 3 (buffered) / 2.
:class:`RowPacker` ``(per_beat_in, per_beat_out, value_shape, index_bits, extra)``
    partial beats -> *dense* row, ``per_beat_in`` -> ``per_beat_out`` elements per beat; rows
    never merge; ``error`` ORed over the row (see the class for the exact rule), extras of the
    row's first beat; one input beat per cycle, rows included, when ``per_beat_in <=
    per_beat_out``, output-bound (one output beat per cycle) otherwise; latency 1.
:class:`Fork` ``(shape, n)``
    each beat to ``n`` consumers, each taking it once, in its own time; combinational.
:class:`Join` ``(a_shape, b_shape)``
    zip of two streams into one ``{a, b}`` payload, a beat when both are valid; combinational.
:class:`RowCounter` ``(per_beat, value_shape, index_bits, extra)``
    adds each element's position in its row as ``index``; combinational.
:class:`RowAdapter` ``(src, dst)``
    between row layouts that differ only in what the consumer does not take (an extra field
    dropped, element fields widened); refuses to lose information; combinational.

Every block obeys the ``amaranth.lib.stream`` rules: no ``valid`` depends on a ``ready`` of the
same block's outputs; an output's payload is stable while ``valid & ~ready``; ``ready`` may
depend on ``valid`` (and on the payload, for the packer). Blocks that are combinational pass
paths straight through (``valid``/payload forward, ``ready`` backward): put a
:class:`StreamFIFO` between units where a register stage is wanted.

Naming: ``per_beat`` always counts elements per beat (beats per cycle is then one); a unit
whose beat width is a parameter calls that parameter ``per_beat``. "Lanes" is kept for the
scheduler's work lanes (the detector's ``sched_lanes``), "values per word" for packed words
(the MAC's ``n = 16 / p``).
"""

from amaranth.hdl import Cat, Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .numbers import check_int

__all__ = ["RowLayout", "row_signature", "StreamFIFO", "RowPacker", "Fork", "Join", "join_layout",
           "RowCounter", "RowAdapter"]


class RowLayout(data.StructLayout):
    """Payload of a row stream (see the module docstring).

    Parameters
    ----------
    per_beat : int
        Elements per beat, >= 1.
    value_shape : shape-castable or None
        Shape of an element's value; ``None``: no ``data`` field.
    index_bits : int
        Width of an element's column index; 0: no ``index`` field.
    extra : dict
        Per-row fields (name -> shape), appended after the standard ones.
    """

    def __init__(self, per_beat, value_shape=None, index_bits=0, extra=None):
        if not isinstance(per_beat, int) or per_beat < 1:
            raise ValueError(f"per_beat must be an integer >= 1, not {per_beat!r}")
        if not isinstance(index_bits, int) or index_bits < 0:
            raise ValueError(f"index_bits must be an integer >= 0, not {index_bits!r}")
        self.per_beat = per_beat
        self.value_shape = value_shape
        self.index_bits = index_bits
        self.extra = dict(extra or {})
        fields = {}
        if value_shape is not None:
            fields["data"] = data.ArrayLayout(value_shape, per_beat)
        if index_bits:
            fields["index"] = data.ArrayLayout(unsigned(index_bits), per_beat)
        fields.update({"count": range(per_beat + 1), "last": 1, "error": 1})
        for name in self.extra:
            if name in fields:
                raise ValueError(f"extra field {name!r} clashes with a row-stream field")
        fields.update(self.extra)
        super().__init__(fields)

    def __repr__(self):
        return (f"RowLayout({self.per_beat}, {self.value_shape!r}, {self.index_bits}, "
                f"extra={self.extra!r})")


def row_signature(per_beat, value_shape=None, index_bits=0, extra=None):
    """``stream.Signature(RowLayout(...))``: the signature of a row-stream port."""
    return stream.Signature(RowLayout(per_beat, value_shape, index_bits, extra))


# ----------------------------------------------------------------------------------------------
# StreamFIFO
# ----------------------------------------------------------------------------------------------

class StreamFIFO(wiring.Component):
    """A first-in first-out queue of ``depth`` beats of any payload ``shape``, between two streams.

    ``i`` takes a beat whenever there is room (``ready`` does not look at ``o``), ``o`` presents
    the oldest beat (``valid`` from registers only). Built on ``amaranth.lib.fifo``:
    :class:`~amaranth.lib.fifo.SyncFIFOBuffered` (``buffered=True``: storage in a memory with a
    synchronous read port, block-RAM friendly, output registered) or
    :class:`~amaranth.lib.fifo.SyncFIFO` (``buffered=False``: asynchronous read).

    Timing (measured by ``tests/test_streams.py``): a beat taken on ``i`` in cycle *t* into an
    empty queue is presented on ``o`` in cycle *t +* :attr:`latency` (2 buffered, 1 unbuffered;
    1 for ``buffered=True, depth=1``, a single register). Throughput: one beat per cycle for
    ``depth >= 2`` unbuffered and ``depth >= 3`` buffered; one beat every 2 cycles below
    that (the write side sees only the stored level, not this cycle's read).

    Parameters
    ----------
    shape : shape-castable
        The payload (e.g. a :class:`RowLayout`).
    depth : int
        Beats held, >= 1.
    buffered : bool

    Members
    -------
    i : ``In(stream.Signature(shape))``
    o : ``Out(stream.Signature(shape))``
    level : ``Out(range(depth + 1))``
        Beats held (including the one presented on ``o``).
    """

    def __init__(self, shape, depth, *, buffered=True):
        Shape.cast(shape)
        check_int("depth", depth, 1)
        self.shape = shape
        self.depth = depth
        self.buffered = bool(buffered)
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
            "level": Out(range(depth + 1)),
        })

    @property
    def latency(self):
        """Cycles from a beat taken on ``i`` (empty queue) to it presented on ``o``."""
        return 2 if self.buffered and self.depth > 1 else 1

    @property
    def full_rate(self):
        """Whether the queue sustains one beat per cycle (else one per 2 cycles)."""
        return self.depth >= (3 if self.buffered else 2)

    def elaborate(self, platform):
        m = Module()
        kind = SyncFIFOBuffered if self.buffered else SyncFIFO
        fifo = m.submodules.fifo = kind(width=Shape.cast(self.shape).width, depth=self.depth)
        wiring.connect(m, wiring.flipped(self.i), fifo.w_stream)
        wiring.connect(m, fifo.r_stream, wiring.flipped(self.o))
        m.d.comb += self.level.eq(fifo.level)
        return m


# ----------------------------------------------------------------------------------------------
# Fork and Join
# ----------------------------------------------------------------------------------------------

class Fork(wiring.Component):
    """Broadcast: every beat of ``i`` is taken exactly once by each of the ``n`` outputs ``o[k]``.

    ``o[k].valid`` is ``i.valid`` and not yet taken by ``o[k]`` (a register per output, cleared
    when ``i`` advances), so no ``valid`` depends on a ``ready``; ``i.ready`` is high when every
    output has taken the beat or takes it now. Outputs may take a beat in different cycles; the
    beat stays on every output that has not taken it (held by the stream rule on ``i``).

    Timing: combinational (latency 0: ``o[k]`` presents ``i``'s beat in the same cycle); one beat
    per cycle when every output is ready; ``i`` advances in the cycle the slowest output takes.
    Paths: ``i.valid``/``i.payload`` -> ``o[k]``; every ``o[k].ready`` -> ``i.ready``.

    Members
    -------
    i : ``In(stream.Signature(shape))``
    o : ``Out(stream.Signature(shape)).array(n)``
    """

    latency = 0

    def __init__(self, shape, n):
        Shape.cast(shape)
        check_int("n", n, 1)
        self.shape = shape
        self.n = n
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)).array(n),
        })

    def elaborate(self, platform):
        m = Module()
        done = Signal(self.n)            # o[k] has taken the current beat of i
        taken = Cat(o.valid & o.ready for o in self.o)
        for k, o in enumerate(self.o):
            m.d.comb += [o.payload.eq(self.i.payload), o.valid.eq(self.i.valid & ~done[k])]
        m.d.comb += self.i.ready.eq((done | Cat(o.ready for o in self.o)).all())
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += done.eq(0)
        with m.Else():
            m.d.sync += done.eq(done | taken)
        return m


def join_layout(a_shape, b_shape):
    """Payload of :class:`Join`'s output: ``StructLayout({"a": a_shape, "b": b_shape})``."""
    return data.StructLayout({"a": a_shape, "b": b_shape})


class Join(wiring.Component):
    """Zip: one beat on ``o`` (payload ``{a, b}``, :func:`join_layout`) per pair of beats, one
    from ``a`` and one from ``b``, taken together.

    ``o.valid = a.valid & b.valid``; ``a.ready = o.ready & b.valid`` and ``b.ready = o.ready &
    a.valid`` (a ``ready`` may look at the other input's ``valid``; no ``valid`` looks at a
    ``ready``). Timing: combinational (latency 0), one beat per cycle when both inputs are valid
    and ``o`` is ready. Rows are not aligned: the caller pairs streams whose beats correspond.

    Members
    -------
    a : ``In(stream.Signature(a_shape))``
    b : ``In(stream.Signature(b_shape))``
    o : ``Out(stream.Signature(join_layout(a_shape, b_shape)))``
    """

    latency = 0

    def __init__(self, a_shape, b_shape):
        Shape.cast(a_shape)
        Shape.cast(b_shape)
        self.a_shape, self.b_shape = a_shape, b_shape
        super().__init__({
            "a": In(stream.Signature(a_shape)),
            "b": In(stream.Signature(b_shape)),
            "o": Out(stream.Signature(join_layout(a_shape, b_shape))),
        })

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [
            self.o.payload.a.eq(self.a.payload),
            self.o.payload.b.eq(self.b.payload),
            self.o.valid.eq(self.a.valid & self.b.valid),
            self.a.ready.eq(self.o.ready & self.b.valid),
            self.b.ready.eq(self.o.ready & self.a.valid),
        ]
        return m


# ----------------------------------------------------------------------------------------------
# RowPacker
# ----------------------------------------------------------------------------------------------

def _any(values):
    """OR of ``values`` as a balanced tree."""
    values = list(values)
    while len(values) > 1:
        values = [values[k] | values[k + 1] if k + 1 < len(values) else values[k]
                  for k in range(0, len(values), 2)]
    return values[0]


def _element_fields(layout):
    """``{name: shape}`` of the per-element fields (``data``, ``index``) of a RowLayout."""
    fields = {}
    if layout.value_shape is not None:
        fields["data"] = layout.value_shape
    if layout.index_bits:
        fields["index"] = unsigned(layout.index_bits)
    return fields


class RowPacker(wiring.Component):
    """Packs a row stream with partial beats into a *dense* row stream, ``per_beat_in`` ->
    ``per_beat_out`` elements per beat (either may be the larger).

    Output, exactly (:func:`attnforge.golden.streams.pack` is the reference): each input row
    (its beats up to the one with ``last``) becomes the row of the same elements -- ``data``
    and ``index`` of the valid lanes of its beats, in order -- cut into beats of ``per_beat_out``:
    every beat full except the row's last, which holds 1..``per_beat_out`` elements, or 0 if the
    row is empty (an empty row, however many empty beats it came in, is one beat ``count = 0,
    last = 1``). Rows never merge, never split. ``error``: the row's last output beat carries
    the OR of ``error`` over all the row's input beats; an earlier output beat carries the OR
    over the input beats up to the one that holds its last element (a full beat may leave before
    later input beats are seen). When the producer keeps ``error`` constant over a row (the
    convention for per-row facts), every output beat therefore carries the row's flag. Extra
    fields: those of the row's first input beat, on every output beat. Lanes at and above
    ``count`` are zero.

    How: a buffer of ``per_beat_in + per_beat_out`` element slots (each element with the OR of
    ``error`` over its row so far) holds the *head* row, being output; an input beat is
    appended where the buffer ends after this cycle's output, and the buffer shifts by
    ``per_beat_out`` when a beat leaves. A full beat leaves only when the row is known to go on
    (more elements buffered, or an input beat with elements presented) or to end (its ``last``
    beat taken, or an empty ``last`` beat presented), so the row's last beat is never empty
    unless the row is. Once the head row has ended and its rest fits one beat, the next row
    (the *tail*) begins at slot ``per_beat_out``, behind that last beat, with its own ``error``,
    ``last`` and extras; when the head's last beat leaves, the tail becomes the head.

    Timing (measured by ``tests/test_streams.py``, output always ready):

    * latency: an output beat is presented in the cycle after the input beat completing it is
      taken (:attr:`latency` = 1); a full beat waiting for the row to go on leaves in the cycle
      the next input beat with elements (or the empty ``last`` beat) is presented
      (combinational path ``i`` -> ``o``).
    * ``per_beat_in <= per_beat_out``: one input beat per cycle, any beats, rows included (no
      bubble between rows).
    * ``per_beat_in > per_beat_out``: output-bound, one output beat per cycle while the buffer
      holds more than ``per_beat_out`` elements of the head or the head has ended; a row of
      ``L`` elements in full beats takes ``ceil(L / per_beat_out)`` cycles, back to back
      across rows; an input beat is taken whenever at most ``per_beat_out`` elements remain
      after this cycle's output.
    * an empty row: one beat per cycle in, one per cycle out.

    ``i.ready`` depends on ``o.ready`` and ``i.valid``/``i.payload`` (combinationally);
    ``o.valid`` never depends on ``o.ready``.

    Parameters
    ----------
    per_beat_in, per_beat_out : int
        Elements per input / output beat, >= 1.
    value_shape, index_bits, extra :
        As for :class:`RowLayout` (same for input and output).

    Members
    -------
    i : ``In(row_signature(per_beat_in, value_shape, index_bits, extra))``
    o : ``Out(row_signature(per_beat_out, value_shape, index_bits, extra))``
    """

    def __init__(self, per_beat_in, per_beat_out, value_shape=None, index_bits=0, extra=None):
        check_int("per_beat_in", per_beat_in, 1)
        check_int("per_beat_out", per_beat_out, 1)
        self.per_beat_in = per_beat_in
        self.per_beat_out = per_beat_out
        self.i_layout = RowLayout(per_beat_in, value_shape, index_bits, extra)
        self.o_layout = RowLayout(per_beat_out, value_shape, index_bits, extra)
        self.capacity = per_beat_in + per_beat_out
        super().__init__({
            "i": In(stream.Signature(self.i_layout)),
            "o": Out(stream.Signature(self.o_layout)),
        })

    #: Cycles from taking the input beat that completes an output beat to presenting it (a full
    #: beat waiting for its row's fate leaves with 0 when the next beat is presented).
    latency = 1

    def elaborate(self, platform):
        m = Module()
        p_in, p_out, cap = self.per_beat_in, self.per_beat_out, self.capacity
        fields = _element_fields(self.i_layout)
        width = sum(Shape.cast(s).width for s in fields.values())
        i, o = self.i, self.o
        ip, op = i.payload, o.payload

        def lane(l):                     # input lane l as one element word (fields in order)
            return Cat(*(ip[f][l] for f in fields))

        buf = [Signal(width, name=f"buf{j}") for j in range(cap)]
        ebit = Signal(cap)               # per element: OR of error over its row up to it
        n = Signal(range(cap + 1))       # slots in use (with a tail: per_beat_out + tail's)
        # The head row (the one being output).
        ended = Signal()                 # its last beat has been taken
        start = Signal(init=1)           # no beat of it taken yet
        err = Signal()                   # OR of error over its beats taken
        # The tail row: the next row, begun while the head's last beat (``head`` elements in
        # slots 0 .. per_beat_out-1) waits; its elements start at slot per_beat_out.
        tail = Signal()
        head = Signal(range(p_out + 1))
        ended2 = Signal()
        err2 = Signal()
        extra = self.i_layout.extra
        ext = Signal(data.StructLayout(extra), name="ext") if extra else None
        ext2 = Signal(data.StructLayout(extra), name="ext2") if extra else None
        ext_in = Cat(*(ip[name] for name in extra))

        # Every term below is a named signal: an expression used in several places would be
        # emitted again at every use (Amaranth inlines it), and the 17 slots' selects use each
        # of them many times (16 -> 1: 973 lines of Verilog named, 23,465 inlined).
        def comb(name, value, shape=1):
            sig = Signal(shape, name=name)
            m.d.comb += sig.eq(value)
            return sig

        # Output, from the buffer (and, for a full beat waiting for the row's fate, from i).
        look = comb("look", ~tail & ~ended & (n == p_out) & i.valid)
        look_more = comb("look_more", look & (ip.count != 0))
        look_end = comb("look_end", look & (ip.count == 0) & ip.last)
        count = comb("count", Mux(tail, head, Mux(n >= p_out, p_out, n)), range(p_out + 1))
        last = comb("last", tail | (ended & (n <= p_out)) | look_end)
        m.d.comb += [
            o.valid.eq(tail | ended | (n > p_out) | look_more | look_end),
            op.count.eq(count),
            op.last.eq(last),
            op.error.eq(Mux(last, err | (look_end & ip.error), ebit[p_out - 1])),
        ]
        for l in range(p_out):
            offset = 0
            for f, shape in fields.items():
                w = Shape.cast(shape).width
                m.d.comb += op[f][l].eq(Mux(l < count, buf[l][offset:offset + w], 0))
                offset += w
        for name in extra:
            m.d.comb += op[name].eq(ext[name])

        # After this cycle's output: the buffer shifts by per_beat_out (a full beat, or the
        # head's last beat with a tail behind it), or empties (the head's last beat, no tail).
        take_o = comb("take_o", o.valid & o.ready)
        end_o = comb("end_o", take_o & last)
        promote = comb("promote", end_o & tail)          # the tail becomes the head
        empties = comb("empties", end_o & ~tail)
        n_after = comb("n_after", Mux(empties, 0, Mux(take_o, n - p_out, n)), range(cap + 1))

        def after_is(k):                 # n_after == k, without the subtraction
            return Mux(empties, k == 0, Mux(take_o, n == k + p_out, n == k))

        h_ended = comb("h_ended", Mux(end_o, promote & ended2, ended))
        h_err = comb("h_err", Mux(end_o, promote & err2, err))
        h_start = comb("h_start", Mux(end_o, ~tail, start))
        t_open = comb("t_open", tail & ~end_o & ~ended2)

        # Where an input beat goes: appended to the open head or tail (at n_after), or, when
        # the head has ended and its rest fits one beat, begins a tail at slot per_beat_out.
        tail_waits = comb("tail_waits", tail & ~end_o)
        to_head = comb("to_head", ~h_ended & ~tail_waits)
        new_tail = comb("new_tail", h_ended & ~tail_waits & (n_after <= p_out))
        # (with a tail, n >= per_beat_out: its test only helps k-induction)
        m.d.comb += i.ready.eq(new_tail | (to_head & (n_after <= cap - p_in))
                               | (t_open & (n_after == p_out)))
        take_i = comb("take_i", i.valid & i.ready)
        marker = comb("marker", end_o & look_end)        # i's empty last beat ends the row
        begins = comb("begins", take_i & ~marker)        # i's beat joins or begins a row
        pos = comb("pos", Mux(new_tail, p_out, n_after), range(cap + 1))
        e_in = comb("e_in", Mux(to_head, h_err, Mux(t_open, err2, 0)) | ip.error)

        # Slot j takes input lane j - pos: at most one lane hits, so a one-hot OR (not a
        # priority chain) picks it; pos == k comes from comparisons of the registered n
        # (the subtraction n - per_beat_out stays off the path to the slot selects).
        at = [comb(f"at{k}", Mux(new_tail, k == p_out, after_is(k)))
              for k in range(cap - p_in + 1)]
        has = [comb(f"has{l}", l < ip.count) for l in range(p_in)]    # input lane l valid
        for j in range(cap):
            val = Mux(take_o, buf[j + p_out], buf[j]) if j + p_out < cap else \
                Mux(take_o, 0, buf[j])
            e = Mux(take_o, ebit[j + p_out], ebit[j]) if j + p_out < cap else \
                Mux(take_o, 0, ebit[j])
            hits = [(l, at[j - l] & has[l]) for l in range(p_in)
                    if 0 <= j - l <= cap - p_in]
            if hits:
                hits = [(l, comb(f"hit{j}_{l}", h)) for l, h in hits]
                hit = comb(f"hit{j}", begins & _any(h for _, h in hits))
                val = Mux(hit, _any(Mux(h, lane(l), 0) for l, h in hits), val)
                e = Mux(hit, e_in, e)
            m.d.sync += [buf[j].eq(val), ebit[j].eq(e)]

        m.d.sync += [
            n.eq(Mux(begins, pos + ip.count, n_after)),
            ended.eq(h_ended), err.eq(h_err), start.eq(h_start), tail.eq(tail & ~end_o),
        ]
        if ext is not None:
            with m.If(promote):
                m.d.sync += ext.eq(ext2)
        with m.If(begins & to_head):
            m.d.sync += [ended.eq(ip.last), err.eq(e_in), start.eq(0)]
            if ext is not None:
                # (h_start implies an empty buffer; the test of n only helps k-induction)
                with m.If(h_start & (n_after == 0)):
                    m.d.sync += ext.eq(ext_in)
        with m.If(begins & t_open):
            m.d.sync += [ended2.eq(ip.last), err2.eq(e_in)]
        with m.If(begins & new_tail):
            m.d.sync += [tail.eq(1), head.eq(n_after), ended2.eq(ip.last), err2.eq(e_in)]
            if ext is not None:
                m.d.sync += ext2.eq(ext_in)
        return m


# ----------------------------------------------------------------------------------------------
# RowCounter
# ----------------------------------------------------------------------------------------------

class RowCounter(wiring.Component):
    """Adds column indices to a row stream without them: lane ``l`` of a beat gets the number of
    elements of the row before it plus ``l`` (``0 .. L-1`` over the row, for any beat shapes;
    lanes at and above ``count`` get 0). Every other field passes unchanged.

    Why: dense producers (softmax over a full row, the RMMU's score rows) imply the column by
    position; a sparse consumer (the detector, the sparse softmax) wants it explicit. Indices
    wrap modulo ``2 ** index_bits``.

    Timing: combinational (latency 0), one beat per cycle; ``ready`` and ``valid`` pass through.

    Members
    -------
    i : ``In(row_signature(per_beat, value_shape, 0, extra))``
    o : ``Out(row_signature(per_beat, value_shape, index_bits, extra))``
    """

    latency = 0

    def __init__(self, per_beat, value_shape, index_bits, extra=None):
        check_int("per_beat", per_beat, 1)
        check_int("index_bits", index_bits, 1)
        self.per_beat = per_beat
        self.i_layout = RowLayout(per_beat, value_shape, 0, extra)
        self.o_layout = RowLayout(per_beat, value_shape, index_bits, extra)
        super().__init__({
            "i": In(stream.Signature(self.i_layout)),
            "o": Out(stream.Signature(self.o_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        i, o = self.i, self.o
        bits = self.o_layout.index_bits
        base = Signal(bits)              # elements of the row before this beat
        for name in self.i_layout.members:
            m.d.comb += o.payload[name].eq(i.payload[name])
        for l in range(self.per_beat):
            m.d.comb += o.payload.index[l].eq(Mux(l < i.payload.count, base + l, 0))
        m.d.comb += [o.valid.eq(i.valid), i.ready.eq(o.ready)]
        with m.If(i.valid & i.ready):
            m.d.sync += base.eq(Mux(i.payload.last, 0, base + i.payload.count))
        return m


# ----------------------------------------------------------------------------------------------
# RowAdapter
# ----------------------------------------------------------------------------------------------

class RowAdapter(wiring.Component):
    """Joins two row streams whose layouts differ only in what the consumer does not need:
    ``i`` (``RowLayout`` ``src``) -> ``o`` (``RowLayout`` ``dst``), combinational.

    ``count``, ``last``, ``error`` pass through; ``data`` and ``index`` are extended to the
    destination's (at least as wide) shapes, signed values sign-extended; extra fields present
    in both pass through, extra fields of the source that the destination lacks are dropped
    (the detector's scheduler ``lane`` in front of a softmax, say). It exists so that a top level
    joins units with ``wiring.connect`` instead of wiring ``valid``/``ready``/payload by hand.

    Raises ``ValueError`` when the destination would lose information: another ``per_beat``,
    a narrower element field, an element field or extra field the source does not have.
    """

    def __init__(self, src, dst):
        for name, layout in (("src", src), ("dst", dst)):
            if not isinstance(layout, RowLayout):
                raise ValueError(f"{name} must be a RowLayout, not {layout!r}")
        if src.per_beat != dst.per_beat:
            raise ValueError(f"dst.per_beat must equal src.per_beat ({src.per_beat}), "
                             f"not {dst.per_beat!r}")
        s_el, d_el = _element_fields(src), _element_fields(dst)
        for name, shape in d_el.items():
            if name not in s_el:
                raise ValueError(f"dst field {name!r} is not in the source row")
            if Shape.cast(shape).width < Shape.cast(s_el[name]).width:
                raise ValueError(f"dst field {name!r} must be at least "
                                 f"{Shape.cast(s_el[name]).width} bits wide, not "
                                 f"{Shape.cast(shape).width}")
        for name in dst.extra:
            if name not in src.extra:
                raise ValueError(f"dst extra field {name!r} is not in the source row")
        self._src, self._dst = src, dst
        super().__init__({"i": In(stream.Signature(src)), "o": Out(stream.Signature(dst))})

    def elaborate(self, platform):
        m = Module()
        i, o = self.i.payload, self.o.payload
        m.d.comb += [self.o.valid.eq(self.i.valid), self.i.ready.eq(self.o.ready),
                     o.count.eq(i.count), o.last.eq(i.last), o.error.eq(i.error)]
        for name in _element_fields(self._dst):
            for lane in range(self._dst.per_beat):
                m.d.comb += o[name][lane].eq(i[name][lane])
        for name in self._dst.extra:
            m.d.comb += o[name].eq(i[name])
        return m
