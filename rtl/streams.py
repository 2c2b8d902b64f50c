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
           ``count = 0, last = 1, error = 1``;
plus unit-specific *extra* fields that hold per-row facts (e.g. the top-k's ``kth``, the
scheduler's ``lane``), constant over the beats of a row.

Any beat may be partial (a sparse producer such as the detector emits as many kept elements as
it found), and a row may be empty (one beat, ``count = 0, last = 1``). A *dense* row stream
additionally guarantees that every beat but the last is full; the blocks in this module turn
one into the other.

Naming: ``per_beat`` always counts elements per beat (beats per cycle is then one); a unit
whose beat width is a parameter calls that parameter ``per_beat``. "Lanes" is kept for the
scheduler's work lanes (the detector's ``sched_lanes``), "values per word" for packed words
(the MAC's ``n = 16 / p``).
"""

from amaranth.hdl import unsigned
from amaranth.lib import data, stream

__all__ = ["RowLayout", "row_signature"]


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
