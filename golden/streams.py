"""Reference models of the stream blocks of :mod:`attnforge.rtl.streams`, over lists of beats.

A *beat* is a dict of a :class:`~attnforge.rtl.streams.RowLayout` payload: ``data`` and/or
``index`` (lists of ``per_beat`` ints, lanes at and above ``count`` zero), ``count``, ``last``,
``error`` and the extra fields (ints). The models say exactly which beats come out for a list of
beats going in; timing is the RTL's business (its docstrings, measured by the tests).
"""

__all__ = ["ELEMENT_FIELDS", "beat", "rows", "elements", "row_beats", "random_rows",
           "is_dense", "pack", "pack_prefix", "count_rows", "fifo", "fork", "join"]

ELEMENT_FIELDS = ("data", "index")


def beat(per_beat, elems=(), *, last=0, error=0, fields=ELEMENT_FIELDS, **extra):
    """One beat holding ``elems`` (a list of ``{field: value}``), zero-padded to ``per_beat``."""
    if len(elems) > per_beat:
        raise ValueError(f"{len(elems)} elements do not fit a beat of {per_beat}")
    b = {f: [e[f] for e in elems] + [0] * (per_beat - len(elems)) for f in fields}
    b.update(count=len(elems), last=int(last), error=int(error), **extra)
    return b


def rows(beats):
    """Split a list of beats into rows (lists of beats, each ending with ``last``); a trailing
    incomplete row is returned too (its last beat has ``last = 0``)."""
    out, row = [], []
    for b in beats:
        row.append(b)
        if b["last"]:
            out.append(row)
            row = []
    if row:
        out.append(row)
    return out


def _fields(b):
    return [f for f in ELEMENT_FIELDS if f in b]


def elements(row):
    """The elements of a row (list of beats), in order: ``{field: value}`` of the valid lanes."""
    return [{f: b[f][l] for f in _fields(b)} for b in row for l in range(b["count"])]


def row_beats(elems, per_beat, *, error=0, fields=ELEMENT_FIELDS, **extra):
    """A dense row of ``elems``: full beats, the last one partial, one empty beat if no
    elements; ``error`` and extras on every beat."""
    chunks = [elems[s:s + per_beat] for s in range(0, len(elems), per_beat)] or [[]]
    return [beat(per_beat, c, last=k == len(chunks) - 1, error=error, fields=fields, **extra)
            for k, c in enumerate(chunks)]


def random_rows(rng, n_rows, per_beat, *, fields=ELEMENT_FIELDS, value_range=(-128, 127),
                index_bits=8, extra=None, max_len=None, p_empty=0.15, p_error=0.2,
                late_error=False):
    """Random rows of *partial* beats (random counts 0..per_beat, empty beats inside rows,
    empty rows, single-beat rows); ``rng`` is a ``random.Random``. ``error`` is constant over
    a row, or with ``late_error`` raised on one random beat of some rows; ``extra`` maps a
    field name to its bit width (random per row, constant over the row)."""
    max_len = max_len or 4 * per_beat + 3
    lo, hi = value_range
    beats, col = [], 0
    for _ in range(n_rows):
        ext = {name: rng.randrange(1 << w) for name, w in (extra or {}).items()}
        length = 0 if rng.random() < p_empty else rng.randint(1, max_len)
        counts = []
        while length > 0 or not counts:
            c = min(length, rng.randint(0, per_beat))
            counts.append(c)
            length -= c
        if rng.random() < 0.2:
            counts.append(0)                       # an empty last beat after the elements
        error = int(rng.random() < p_error)
        late = late_error and error and rng.random() < 0.5
        late_at = rng.randrange(len(counts)) if late else None
        for k, c in enumerate(counts):
            elems = []
            for _ in range(c):
                e = {}
                if "data" in fields:
                    e["data"] = rng.randint(lo, hi)
                if "index" in fields:
                    e["index"] = col % (1 << index_bits)
                    col += rng.randint(1, 3)
                elems.append(e)
            err = (k == late_at) if late else error
            beats.append(beat(per_beat, elems, last=k == len(counts) - 1, error=err,
                              fields=fields, **ext))
    return beats


def is_dense(beats, per_beat):
    """Every beat full except each row's last; a row's last beat empty only if the row is."""
    return all(all(b["count"] == per_beat for b in row[:-1])
               and (row[-1]["count"] > 0 or len(row) == 1) for row in rows(beats))


def _extras(b):
    return {k: v for k, v in b.items()
            if k not in ELEMENT_FIELDS and k not in ("count", "last", "error")}


def pack(beats, per_beat):
    """:class:`~attnforge.rtl.streams.RowPacker`: the rows of ``beats`` (which must end with a
    ``last`` beat) as dense rows of ``per_beat`` elements per beat.

    ``error`` of an output beat: the OR over the row's input beats up to the one holding the
    beat's last element; on the row's last beat the OR over all its input beats. Extras: the
    row's first input beat's."""
    if beats and not beats[-1]["last"]:
        raise ValueError("the last beat must end a row (last = 1); see pack_prefix")
    out = []
    for row in rows(beats):
        out += _pack_row(row, per_beat, complete=True)
    return out


def pack_prefix(beats, per_beat):
    """The output beats of an incomplete row (no ``last`` yet) that are already determined: the
    full beats followed by at least one more element."""
    return _pack_row(beats, per_beat, complete=False)


def _pack_row(row, per_beat, *, complete):
    fields = _fields(row[0])
    elems, errs, e = [], [], 0
    for b in row:
        e |= b["error"]
        for l in range(b["count"]):
            elems.append({f: b[f][l] for f in fields})
            errs.append(e)
    extra = _extras(row[0])
    out = []
    for s in range(0, max(len(elems), 1), per_beat):
        chunk = elems[s:s + per_beat]
        is_last = s + per_beat >= len(elems)
        if not complete and (is_last or len(chunk) < per_beat):
            break
        error = e if complete and is_last else errs[s + len(chunk) - 1]
        out.append(beat(per_beat, chunk, last=complete and is_last, error=error,
                        fields=fields, **extra))
    return out


def count_rows(beats, index_bits):
    """:class:`~attnforge.rtl.streams.RowCounter`: each beat with ``index`` = the element's
    position in its row (modulo ``2 ** index_bits``; 0 above ``count``)."""
    out, pos = [], 0
    for b in beats:
        per_beat = len(b["data"])
        out.append({**b, "index": [(pos + l) % (1 << index_bits) if l < b["count"] else 0
                                   for l in range(per_beat)]})
        pos = 0 if b["last"] else pos + b["count"]
    return out


def fifo(beats):
    """:class:`~attnforge.rtl.streams.StreamFIFO`: the same beats, in order."""
    return list(beats)


def fork(beats, n):
    """:class:`~attnforge.rtl.streams.Fork`: every output gets every beat."""
    return [list(beats) for _ in range(n)]


def join(a, b):
    """:class:`~attnforge.rtl.streams.Join`: beat ``k`` of each, paired, as long as both last."""
    return [{"a": x, "b": y} for x, y in zip(a, b)]
