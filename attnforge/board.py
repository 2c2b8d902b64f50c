"""Host side of the board target: ``attnforge board build`` / ``attnforge board run``.

The transport is generic and knows nothing about units:

* :class:`Link` speaks the bridge protocol of :mod:`attnforge.rtl.bridge` over any object with
  pyserial's ``read(n)`` / ``write(data)`` (a ``serial.Serial``, or the cocotb testbench's
  simulated port): sequence numbers, CRC check, retry of a lost or corrupted exchange, resync.
* :func:`exchange` plays a program -- per input port, payloads in order; per output port, the
  expected transactions in order -- through a :class:`Link` and checks every answer.

The unit-specific part is a small :class:`Traffic` subclass per unit (registered in
:data:`TRAFFIC`): random and corner transactions, expected answers from the golden model, the
comparison. Payload fields are packed and unpacked by :class:`attnforge.testbench.kit.Codec`
from the very layouts the generator used.

Every failure is one line: :class:`LinkError` (no answer, protocol violation), a stalled unit, a
design mismatch (the INFO answer is not the design the host expects).
"""

import random
import time
from collections import deque

from .paths import digest
from .rtl import unit as unit_record
from .rtl.bridge import (ACK, ANSWER_INFO, BUSY, DATA, EMPTY, INFO, NAK, READ, RESET, SOF,
                         WRITE, crc16, descriptor, payload_bits, stream_ports)

__all__ = ["LinkError", "Link", "Traffic", "TRAFFIC", "BOARD_POINTS", "traffic", "ident",
           "differ", "exchange", "check_design", "run_regression", "add_parser", "run"]

#: The parameters a unit goes on a board at when ``board build`` / ``board run`` get no
#: ``--param`` for them (the rest are the unit's defaults): the points measured in
#: docs/board.md, which its record's ``Synth(boards=...)`` refers to. The radix top-k engine at
#: its default ``digit_bits = 8`` has ~718 levels of logic and misses even the ULX3S's 25 MHz;
#: with 4-bit digits it meets it (docs/board.md). The RMMU's default 32 x 16 PE array needs ~50
#: ECP5-85s; on a board it is a 2 x 2 array in two row groups. The lane's RMMU (4 x 2 at its
#: defaults) is a 2 x 1 array on a board: one estimate row, one compute row.
BOARD_POINTS = {"topk": {"digit_bits": 4},
                "rmmu": {"rows": 2, "cols": 2, "groups": 2, "tile_m": 4, "max_m": 64,
                         "max_k": 64, "max_n": 64},
                "lane": {"rows": 2, "cols": 1}}

NAMES = {WRITE: "WRITE", READ: "READ", RESET: "RESET", INFO: "INFO", ACK: "ACK", BUSY: "BUSY",
         DATA: "DATA", EMPTY: "EMPTY", NAK: "NAK", ANSWER_INFO: "INFO"}


class LinkError(RuntimeError):
    """The board did not answer, or answered against the protocol (one-line message)."""


def ident(unit, params):
    """The 4 bytes the bridge appends to its INFO answer: a digest of the unit name and its
    complete parameters (defaults filled in, so ``max_depth=1024`` given or not is the same
    design). A component that is not a registered unit is digested by name alone."""
    try:
        params = unit_record(unit).validate(**params)
    except ValueError:
        params = dict(params)
    return bytes.fromhex(digest(unit, params)[:8])


class Link:
    """Stop-and-wait requests over ``port`` (pyserial-like ``read``/``write``; its own read
    timeout bounds every wait).

    :meth:`request` sends a frame with the next sequence number and waits for the answer with
    that number. A timeout, a NAK or an answer with a bad CRC makes it wait until the line has
    been quiet for one read timeout (the bridge then hunts for SOF again) and send the *same*
    frame again -- same sequence number, so the bridge replays its answer instead of executing
    twice. After ``retries`` retries it raises :class:`LinkError`. ``stats`` counts retries,
    CRC errors, NAKs and stale answers.
    """

    def __init__(self, port, *, retries=8):
        self.port = port
        self.retries = retries
        self.seq = 0
        self.stats = {"requests": 0, "retries": 0, "crc_errors": 0, "naks": 0, "timeouts": 0,
                      "stale": 0, "busy": 0}

    @staticmethod
    def frame(rtype, seq, port, payload=b""):
        """The bytes of one frame."""
        body = bytes([rtype, seq, port, len(payload)]) + bytes(payload)
        crc = crc16(body)
        return bytes([SOF]) + body + bytes([crc >> 8, crc & 0xFF])

    def request(self, rtype, port=0, payload=b""):
        """Send one request; return the answer ``(type, port, payload)``."""
        seq, self.seq = self.seq, (self.seq + 1) & 0xFF
        frame = self.frame(rtype, seq, port, payload)
        self.stats["requests"] += 1
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["retries"] += 1
                self._quiet()
            self.port.write(frame)
            answer = self._answer(seq)
            if answer is not None:
                return answer
        raise LinkError(f"no valid answer to {NAMES[rtype]} (port {port}, seq {seq}) after "
                        f"{self.retries + 1} tries: is the board running the bridge at this "
                        f"baud rate?")

    def _read(self, n):
        data = self.port.read(n)
        if len(data) < n:
            self.stats["timeouts"] += 1
            return None
        return data

    def _answer(self, seq):
        """The answer to request ``seq``; ``None`` when it timed out, was corrupted or NAKed."""
        for _ in range(8):                                  # skip a few stale answers
            for _ in range(64):                             # hunt for SOF
                b = self._read(1)
                if b is None:
                    return None
                if b[0] == SOF:
                    break
            else:
                return None
            head = self._read(4)
            if head is None:
                return None
            rest = self._read(head[3] + 2)
            if rest is None:
                return None
            if crc16(head + rest) != 0:
                self.stats["crc_errors"] += 1
                return None
            rtype, rseq, rport = head[0], head[1], head[2]
            if rtype == NAK:
                self.stats["naks"] += 1
                return None
            if rseq != seq:
                self.stats["stale"] += 1
                continue
            return rtype, rport, rest[:-2]
        return None

    def _quiet(self):
        """Read until one read timeout passes without a byte (bounded)."""
        for _ in range(1000):
            if not self.port.read(256):
                return

    def expect(self, answer, allowed, what):
        """``answer``'s type, checked against ``allowed`` (else a one-line LinkError)."""
        if answer[0] not in allowed:
            raise LinkError(f"protocol error: {what} answered with "
                            f"{NAMES.get(answer[0], hex(answer[0]))}")
        return answer[0]

    def reset(self):
        """Reset the unit and the bridge's slots and sequence memory (the link reset)."""
        self.expect(self.request(RESET), {ACK}, "RESET")

    def info(self):
        """The bridge's INFO payload."""
        answer = self.request(INFO)
        self.expect(answer, {ANSWER_INFO}, "INFO")
        return answer[2]


def check_design(link, component, unit, params):
    """Raise ``LinkError`` unless the board runs ``unit`` with ``params`` behind the bridge."""
    want = descriptor(component, ident(unit, params))
    got = link.info()
    if got != want:
        raise LinkError(f"the board runs another design (INFO {got.hex()}, expected "
                        f"{want.hex()} for {unit} {dict(params)}): rebuild or reprogram it")


def exchange(link, component, writes, expected, compare, *, max_idle=2000, on_round=None,
             lazy=False):
    """Play a program through ``link``; return ``(checked, errors)``.

    ``writes``: ``{input port name: [field dict, ...]}``, each port's transactions in order;
    ``expected``: ``{output port name: [expected item, ...]}``; ``compare(port, expected, view)``
    returns ``None`` or how they differ. Input ports are written round robin (a BUSY port is
    skipped until the next round, so ports never wait on one another, as independent stream
    sources); output ports are read until EMPTY every round that wrote nothing, and otherwise
    every 1 to 8 rounds (back to 1 after a round that read data, doubling after one that read
    none: empty polls cost a round trip each); with ``lazy``, only in rounds that wrote
    nothing, so output slots stay full and the unit sees back-pressure until every input is
    BUSY (a back-pressure test). At the end every output port must be EMPTY (no extra
    transaction). ``max_idle`` rounds without progress raise
    :class:`LinkError` (the unit stalled). ``on_round(round)`` may act between rounds (tests:
    a link reset).
    """
    from .testbench.kit import Codec

    ports = {name: (pid, flow, Codec(sig.members["payload"].shape), payload_bits(sig))
             for pid, (name, flow, sig) in enumerate(stream_ports(component))}
    todo = {name: deque(items) for name, items in writes.items() if items}
    want = {name: deque(items) for name, items in expected.items()}
    checked, errors, idle, rnd = 0, [], 0, 0
    poll, since = 1, 0              # read outputs every `poll` rounds (1 after data, up to 8)

    def read(name):
        pid, _, codec, bits = ports[name]
        answer = link.request(READ, pid)
        link.expect(answer, {DATA, EMPTY}, f"READ {name}")
        if answer[0] == EMPTY:
            return None
        return codec.unpack(int.from_bytes(answer[2], "little") & ((1 << bits) - 1))

    while any(todo.values()) or any(want.values()):
        if on_round:
            on_round(rnd)
        rnd += 1
        progress = False
        for name, queue in todo.items():
            if not queue:
                continue
            pid, _, codec, bits = ports[name]
            payload = codec.pack(queue[0]).to_bytes((bits + 7) // 8, "little")
            if link.expect(link.request(WRITE, pid, payload), {ACK, BUSY},
                           f"WRITE {name}") == ACK:
                queue.popleft()
                progress = True
            else:
                link.stats["busy"] += 1
        since += 1
        if not progress or (since >= poll and not lazy):
            since, got = 0, False
            for name, queue in want.items():
                while queue:
                    view = read(name)
                    if view is None:
                        break
                    diff = compare(name, queue.popleft(), view)
                    checked += 1
                    progress = got = True
                    if diff is not None:
                        errors.append(f"{name} #{checked}: {diff}")
            poll = 1 if got else min(2 * poll, 8)
        idle = 0 if progress else idle + 1
        if idle > max_idle:
            left = {n: len(q) for n, q in todo.items() if q}
            missing = {n: len(q) for n, q in want.items() if q}
            raise LinkError(f"the unit made no progress for {max_idle} rounds (writes left "
                            f"{left}, answers missing {missing})")
    for name in want:
        extra = read(name)
        if extra is not None:
            errors.append(f"{name}: extra transaction {dict(extra)}")
    return checked, errors


class Traffic:
    """The unit-specific part of a board run (one subclass per unit, in :data:`TRAFFIC`).

    :meth:`program` returns ``(writes, expected)`` for :func:`exchange` from the golden model:
    corner transactions first (unless ``corners`` is false), then ``count`` random ones, drawn
    from ``rng``."""

    def __init__(self, component):
        self.unit = component

    def program(self, rng, count, corners=True):
        raise NotImplementedError

    def compare(self, port, expected, view):
        raise NotImplementedError


class MACTraffic(Traffic):
    """MAC / PE: weight tiles on ``w``, activation packets on ``a``, results on ``o``."""

    def program(self, rng, count, corners=True):
        from .golden.mac import MACModel, Word
        from .golden.numbers import pack as pack_lanes
        from .testbench.mac import random_program
        u = self.unit
        tiles, words = [], []
        depth = min(u.max_depth, 8)
        for mode in u.modes if corners else ():   # most negative/positive values, full packets
            lo, hi = -(1 << (mode.bits - 1)), (1 << (mode.bits - 1)) - 1
            for a_val, w_val, requant in [(lo, lo, False), (hi, lo, True)]:
                tiles.append([int(pack_lanes([w_val] * mode.lanes, mode))] * mode.lanes)
                for k in range(depth):
                    words.append(Word(data=int(pack_lanes([a_val] * mode.lanes, mode)),
                                      mode=mode, requant=requant, swap=k == 0,
                                      last=k == depth - 1))
        more_tiles, more_words = random_program(rng, u.modes, count, min(u.max_depth, 6))
        tiles += more_tiles
        words += more_words
        model = MACModel(frac_bits=u.frac_bits, max_depth=u.max_depth, modes=u.modes)
        writes = {
            "w": [{"data": r, "last": i == len(rows) - 1} for rows in tiles
                  for i, r in enumerate(rows)],
            "a": [{"data": w.data, "mode": w.mode, "requant": w.requant, "swap": w.swap,
                   "last": w.last} for w in words],
        }
        return writes, {"o": model.run(tiles, words)}

    def compare(self, port, expected, view):
        from .testbench.mac import compare
        return compare(expected, view)


class TopKTraffic(Traffic):
    """Top-k engine: requests on ``req``, score beats on ``s``, winner beats on ``o``."""

    def program(self, rng, count, corners=True):
        from .golden.topk import score_beats
        from .testbench.topk import bad_request, make_scores, model_of, random_request
        u = self.unit
        P, N, W = u.per_beat, u.max_n, u.score_bits
        requests = [(1, 1, make_scores(rng, "random", 1, W)),
                    (N, 1, make_scores(rng, "extremes", N, W)),
                    (N, N, make_scores(rng, "ties", N, W)),
                    (N, N // 2, make_scores(rng, "equal", N, W)),
                    bad_request(rng, N, W), bad_request(rng, N, W)] if corners else []
        requests += [random_request(rng, N, W) for _ in range(count)]
        model = model_of(u)
        writes = {"req": [], "s": []}
        expected = []
        for n, k, x in requests:
            row = score_beats(x, P)
            expected += model.run(n, k, x, row)
            writes["req"].append({"n": n, "k": k})
            writes["s"] += row
        return writes, {"o": expected}

    def compare(self, port, expected, view):
        from .testbench.topk import compare
        return compare(expected, view)


def differ(expected, view, names):
    """``None`` when ``view`` (a :class:`~attnforge.testbench.kit.View`) has the ``expected``
    values in the fields ``names`` (arrays as lists, flags as 0/1), else how they differ."""
    def plain(v):
        return [int(x) for x in v] if isinstance(v, (list, tuple)) else int(v)
    got = {k: plain(view[k]) for k in names}
    exp = {k: plain(expected[k]) for k in names}
    return None if got == exp else f"expected {exp}, got {got}"


class SoftmaxTraffic(Traffic):
    """Softmax: rows of input beats on ``i``, probability beats on ``o``.

    Corners: one row of each kind of the unit testbench's generator (random, peaked, all equal,
    one dominant, extremes, too long, empty, partial beats, junk past ``count``); then ``count``
    rows of the same mix."""

    def program(self, rng, count, corners=True):
        from .golden.softmax import beats_out
        from .testbench.softmax import make_rows
        u = self.unit
        rows = (make_rows(rng, u, 9) if corners else []) + make_rows(rng, u, count)
        return ({"i": [b for row in rows for b in row]},
                {"o": [b for row in rows for b in beats_out(row, u.per_beat, u.fmt)]})

    def compare(self, port, expected, view):
        names = ("data", "count", "last", "error") + (("index",) if self.unit.index_bits else ())
        return differ(expected, view, names)


class DetectorTraffic(Traffic):
    """Detector: commands on ``cmd``, score beats on ``i``; ``mask`` and ``idx`` beats out.

    Corners: per granularity keep all and top-G; for element and vector granularity (rows of
    ``max_len``) also keep none, ties at the threshold, top-1 of equal scores; then bad
    commands. Random: the unit testbench's
    :func:`~attnforge.testbench.detector.random_ops` (5 % bad, scheduler restarts). The
    scheduler's lane loads span operations: the program starts after a RESET."""

    def corner_ops(self, rng, model):
        from .golden.detector import Command, Gran, Mode
        from .golden.numbers import value_range
        from .testbench.detector import bad_ops
        lo, hi = value_range(model.score_bits)
        ops = []
        for gran in Gran:
            # Rows of max_len; blocks (B rows per command) one beat wide, to keep them short.
            n = model.max_len if gran.rows == 1 else min(model.max_len, model.per_beat)
            g = -(-n // gran.cols)
            rnd = [[rng.randint(lo, hi) for _ in range(n)] for _ in range(gran.rows)]
            flat = [[hi] * n for _ in range(gran.rows)]
            ops += [(Command(gran=gran, length=n, threshold=lo), rnd),
                    (Command(mode=Mode.TOPK, gran=gran, length=n, k=g), rnd)]
            if gran.rows == 1:
                ops += [(Command(gran=gran, length=n, threshold=hi + 1), rnd),
                        (Command(gran=gran, length=n, threshold=hi), flat),
                        (Command(mode=Mode.TOPK, gran=gran, length=n, k=1), flat)]
        return ops + bad_ops(rng, model, 3)

    def ops(self, rng, count, corners):
        from .testbench.detector import random_ops
        model = self.model()
        return model, ((self.corner_ops(rng, model) if corners else [])
                       + random_ops(rng, model, count, bad_p=0.05))

    def model(self):
        from .testbench.detector import model_of
        return model_of(self.unit)

    def program(self, rng, count, corners=True):
        from .testbench.detector import expected_beats
        model, ops = self.ops(rng, count, corners)
        cmds, beats, masks, idx = expected_beats(model, ops, rng)
        return {"cmd": cmds, "i": beats}, {"mask": masks, "idx": idx}

    def compare(self, port, expected, view):
        from .testbench.detector import compare_idx, compare_mask
        return (compare_mask if port == "mask" else compare_idx)(expected, view)


class SparseSoftmaxTraffic(DetectorTraffic):
    """Sparse softmax (detector -> softmax): the detector's commands and score beats in;
    ``mask`` beats and the probability rows ``o`` out (the composed golden model)."""

    def model(self):
        from .testbench.sparse_softmax import model_of
        return model_of(self.unit)

    def ops(self, rng, count, corners):
        from .testbench.detector import random_ops
        model = self.model()
        return model, ((self.corner_ops(rng, model.detector) if corners else [])
                       + random_ops(rng, model.detector, count, bad_p=0.05))

    def program(self, rng, count, corners=True):
        from .testbench.detector import expected_beats
        model, ops = self.ops(rng, count, corners)
        cmds, beats, masks, _ = expected_beats(model.detector, ops, rng)
        _, rows = model.run(ops)
        return {"cmd": cmds, "i": beats}, {"mask": masks, "o": rows}

    def compare(self, port, expected, view):
        from .testbench.detector import compare_mask
        from .testbench.sparse_softmax import compare_row
        return (compare_mask if port == "mask" else compare_row)(expected, view)


class ProgressiveQuantTraffic(Traffic):
    """Progressive quantization: queries on ``cmd``; the host is the key memory. Each query's
    planes get word addresses (after random holes); the unit's memory requests come out on
    ``req`` and are checked (plane, address, word count: exactly the MSB plane, plus the LSB
    plane iff the golden model fetched it); the words it asks for go in on ``resp`` in request
    order; probability beats come out on ``o``.

    Queries: the unit testbench's :func:`~attnforge.testbench.progressive_quant.make_queries`
    (random, equal scores, one dominant, extremes, small keys, threshold at max(p), bad n);
    corners are one query of each kind with ``n = 1`` and with ``n = max_len``."""

    def program(self, rng, count, corners=True):
        import numpy as np

        from .golden.progressive_quant import pack_dense, progressive_query, split_planes
        from .testbench.progressive_quant import Query, make_queries
        u, cfg = self.unit, self.unit.config
        P = u.per_beat
        nrng = np.random.default_rng(rng.getrandbits(32))
        queries = []
        if corners:
            for n in (1, u.max_len):
                for query in make_queries(u, nrng, 8):
                    queries.append(query if query.keys is None else
                                   Query(query.q, np.resize(query.keys, (n, cfg.dim)),
                                         query.threshold))
        queries += make_queries(u, nrng, count)
        writes = {"cmd": [], "resp": []}
        expected = {"req": [], "o": []}
        base = 0
        for query in queries:
            writes["cmd"].append({"q": query.q, "n": query.n, "threshold": query.threshold,
                                  "msb_addr": base, "lsb_addr": 0})
            if query.keys is None:                         # bad n: one error beat, no request
                expected["o"].append({"data": [0] * P, "count": 0, "last": 1, "fetched": 0,
                                      "error": 1})
                continue
            planes = [pack_dense(plane.ravel(), bits, cfg.word_bits) for plane, bits in
                      zip(split_planes(query.keys, cfg.msb_bits, cfg.lsb_bits),
                          (cfg.msb_bits, cfg.lsb_bits))]
            addrs = [base, base + len(planes[0]) + rng.randrange(3)]
            base = (addrs[1] + len(planes[1]) + rng.randrange(3)) % (1 << u.addr_bits)
            writes["cmd"][-1]["lsb_addr"] = addrs[1] % (1 << u.addr_bits)
            probs, fetched, _ = progressive_query(query.q, query.keys, query.threshold, cfg)
            for plane in range(1 + fetched):
                expected["req"].append({"plane": plane, "addr": addrs[plane] % (1 << u.addr_bits),
                                        "count": len(planes[plane])})
                writes["resp"] += [{"data": int(w)} for w in planes[plane]]
            n = len(probs)
            expected["o"] += [{"data": [int(x) for x in probs[b:b + P]] + [0] * max(0, b + P - n),
                               "count": min(P, n - b), "last": int(b + P >= n),
                               "fetched": int(fetched), "error": 0} for b in range(0, n, P)]
        return writes, expected

    def compare(self, port, expected, view):
        if port == "req":
            return differ(expected, view, ("plane", "addr", "count"))
        return differ(expected, view, ("data", "count", "last", "fetched", "error"))


class RMMUTraffic(Traffic):
    """RMMU: per row group ``i``, descriptors on ``g[i].cmd``, activation and weight beats
    (formatted by the golden model, with random padding the hardware must mask) on ``g[i].a``
    and ``g[i].w``, result beats on ``g[i].o``. Groups are independent ports written round
    robin, so they run side by side; a descriptor that claims another group's rows waits.

    Corners per group: a 1 x 1 x 1 product in every precision and two descriptors the hardware
    rejects; random: the unit testbench's :func:`~attnforge.testbench.rmmu.random_ops` (10 %
    bad, dimensions up to two M-tiles)."""

    def program(self, rng, count, corners=True):
        import numpy as np

        from .golden.numbers import Precision
        from .golden.rmmu import Descriptor
        from .testbench.rmmu import (cmd_fields, group_rows, model_of, random_operands,
                                     random_ops)
        u = self.unit
        model = model_of(u)
        pad = np.random.default_rng(rng.getrandbits(32))
        writes, expected = {}, {}
        for g in range(u.groups):
            ops = []
            if corners:
                for p in Precision:
                    row0, nrows = group_rows(rng, u.rows, u.groups, g)
                    ops.append(Descriptor(row0, nrows, p, 1, 1, 1, False, p, 0))
                ops += random_ops(rng, model, 2, group=g, bad=1.0)
            ops += random_ops(rng, model, count, group=g, bad=0.1, max_dim=2 * u.tile_m)
            cmds, a_beats, w_beats, out = [], [], [], []
            for desc in ops:
                cmds.append(cmd_fields(desc))
                a, b = (None, None) if model.error(desc) else random_operands(rng, desc)
                lanes, last = model.o_beats(desc, a, b)
                if lanes is None:
                    out.append({"lanes": [0] * (u.cols * 8), "last": True, "error": True,
                                "where": f"g{g} {desc}"})
                    continue
                out += [{"lanes": row.tolist(), "last": bool(end), "error": False,
                         "where": f"g{g} {desc} beat {i}"}
                        for i, (row, end) in enumerate(zip(lanes, last))]
                a_beats += [{"data": [int(x) for x in beat]}
                            for beat in model.a_beats(desc, a, rng=pad)]
                w_beats += [{"data": [[int(x) for x in tile] for tile in beat]}
                            for beat in model.w_beats(desc, b, rng=pad)]
            writes.update({f"g[{g}].cmd": cmds, f"g[{g}].a": a_beats, f"g[{g}].w": w_beats})
            expected[f"g[{g}].o"] = out
        return writes, expected

    def compare(self, port, expected, view):
        from .testbench.rmmu import Group
        return Group.compare((expected["lanes"], expected["last"], expected["error"],
                              expected["where"]), view)


class LaneTraffic(Traffic):
    """Attention lane: one head per ``cfg`` beat, its Q, K, V (and, sparse, P_q and P_k) rows on
    ``load``; the head's output rows on ``o``, its key importance on ``importance``, one
    ``status`` beat (error and kept blocks compared; the cycles depend on the link's gaps and
    are not). Beats and expected answers are the lane bench's
    (:mod:`attnforge.testbench.lane`: ``cfg_fields``, ``head_loads``, ``expected_rows``,
    ``expected_importance``) from :func:`attnforge.golden.lane.run_lane`; a configuration the
    RTL rejects (:func:`attnforge.golden.lane.rtl_error`) is sent as its ``cfg`` beat alone and
    answered by one error status and nothing else.

    Heads: Gaussian Q, K, V in FX16, DSA's random integer projections, shifts fitted to the
    head (:func:`~attnforge.golden.lane.auto_config`). Corners: dense at ``max_t``; sparse at
    ``max_t`` with an INT2 estimate and top-1 (the highest sparsity); INT8 and every block
    kept (two blocks, sigma 2); the shortest head (one block), INT4, ``m = max_m``; a bad
    configuration (``est_bits = 3``). Random: ``t`` a random number of blocks, dense one head in four,
    INT2/4/8, ``k`` and ``m`` random, sigma 0.5 to 2."""

    def head(self, rng, t, mode="sparse", est_bits=4, k=1, m=2, sigma=1.0):
        """One head ``(cfg, qi, ki, vi, pq, pk)`` drawn from ``rng``."""
        import numpy as np

        from .golden.attention import to_fx
        from .golden.lane import LaneConfig, auto_config, int_projection
        from .testbench.lane import lane_params
        u = self.unit
        nrng = np.random.default_rng(rng.getrandbits(32))
        qi, ki, vi = to_fx(*(nrng.normal(0, sigma, (t, u.d)) for _ in range(3)), u.frac_bits)
        pq, pk = int_projection(u.d, m, seed=rng.getrandbits(16))
        cfg = LaneConfig(t=t, mode=mode, est_bits=est_bits, m=m,
                         granularity=f"{u.block}x{u.block}", k=k)
        return auto_config(lane_params(u), cfg, qi, ki, pq, pk), qi, ki, vi, pq, pk

    def program(self, rng, count, corners=True):
        from .golden.lane import rtl_error, run_lane
        from .testbench.lane import (cfg_fields, expected_importance, expected_rows,
                                     head_loads, lane_params)
        u = self.unit
        nb = u.max_t // u.block
        heads = []
        if corners:
            two = min(2, nb)
            heads += [self.head(rng, u.max_t, "dense"),
                      self.head(rng, u.max_t, est_bits=2, k=1),
                      self.head(rng, two * u.block, est_bits=8, k=two, sigma=2.0),
                      self.head(rng, u.block, est_bits=4, k=1, m=u.max_m, sigma=0.5)]
            cfg, *rest = self.head(rng, u.block)
            heads.append((cfg.replace(est_bits=3), *rest))
        for i in range(count):
            t = u.block * rng.randint(1, nb)
            heads.append(self.head(rng, t, "dense" if i % 4 == 3 else "sparse",
                                   est_bits=rng.choice((2, 4, 8)), k=rng.randint(1, t // u.block),
                                   m=rng.randint(1, u.max_m), sigma=rng.choice((0.5, 1, 2))))
        params = lane_params(u)
        writes = {"cfg": [], "load": []}
        expected = {"o": [], "importance": [], "status": []}
        for cfg, qi, ki, vi, pq, pk in heads:
            writes["cfg"].append(cfg_fields(cfg))
            if rtl_error(cfg, max_t=u.max_t, max_m=u.max_m, block=u.block):
                expected["status"].append({"error": 1, "kept": 0})
                continue
            ref = run_lane(params, cfg, qi, ki, vi, pq, pk)
            writes["load"] += [{**b, "target": b["target"].value}
                               for b in head_loads(cfg, qi, ki, vi, pq, pk)]
            expected["o"] += expected_rows(ref.out, u.cols)
            expected["importance"] += expected_importance(ref.importance)
            expected["status"].append({"error": 0, "kept": int(ref.mask.sum()) // u.block ** 2})
        return writes, expected

    def compare(self, port, expected, view):
        return differ(expected, view, tuple(expected))


#: Units the host can drive on a board, with their traffic generators.
TRAFFIC = {"mac": MACTraffic, "mac_fx16": MACTraffic, "mac_separate": MACTraffic,
           "topk": TopKTraffic, "topk_quickselect": TopKTraffic, "topk_bitonic": TopKTraffic,
           "softmax": SoftmaxTraffic, "detector": DetectorTraffic,
           "sparse_softmax": SparseSoftmaxTraffic, "progressive_quant": ProgressiveQuantTraffic,
           "rmmu": RMMUTraffic, "lane": LaneTraffic}


def traffic(unit):
    """The :class:`Traffic` class of ``unit`` (one-line ValueError when there is none)."""
    if unit not in TRAFFIC:
        raise ValueError(f"board run supports units {', '.join(TRAFFIC)}, not {unit!r}")
    return TRAFFIC[unit]


def run_regression(port, unit, params=None, *, count=200, seed=1, log=print, retries=8,
                   lazy=False):
    """Reset the board's unit, check it runs ``unit``/``params``, play corner + ``count``
    random transactions and check every answer (``lazy``: read outputs only when every input
    is BUSY or done, see :func:`exchange`). Returns a summary dict (``errors`` listed)."""
    params = dict(params or {})
    component = unit_record(unit).build(**params)
    component._MustUse__silence = True
    gen = traffic(unit)(component)
    link = Link(port, retries=retries)
    start = time.monotonic()
    link.reset()
    check_design(link, component, unit, params)
    writes, expected = gen.program(random.Random(seed), count)
    checked, errors = exchange(link, component, writes, expected, gen.compare, lazy=lazy)
    summary = {"unit": unit, "params": params, "seed": seed,
               "writes": sum(len(v) for v in writes.values()), "checked": checked,
               "errors": errors, **link.stats, "seconds": round(time.monotonic() - start, 2)}
    log(f"{unit} {params} seed {seed}: {summary['writes']} writes, {checked} answers checked, "
        f"{len(errors)} mismatches; {link.stats['requests']} requests, "
        f"{link.stats['retries']} retries ({link.stats['crc_errors']} CRC errors, "
        f"{link.stats['naks']} NAKs, {link.stats['timeouts']} timeouts), "
        f"{link.stats['busy']} BUSY, "
        f"{summary['seconds']} s")
    for e in errors[:10]:
        log(f"  mismatch: {e}")
    return summary


# -- command line ---------------------------------------------------------------------------
def _params(unit, pairs):
    """``["frac_bits=0", ...]`` -> ``{"frac_bits": 0}``, typed after the record's defaults,
    over the unit's board point (:data:`BOARD_POINTS`)."""
    record = unit_record(unit)
    out = dict(BOARD_POINTS.get(unit, {}))
    for pair in pairs or ():
        name, _, text = pair.partition("=")
        name = name.strip().replace("-", "_")
        if name not in record.defaults or not text:
            raise ValueError(f"--param must be NAME=VALUE with NAME one of "
                             f"{', '.join(record.defaults)}, not {pair!r}")
        default = record.defaults[name]
        try:
            out[name] = tuple(int(v) for v in text.split(",")) if isinstance(default, tuple) \
                else type(default)(text) if not isinstance(default, bool) \
                else text.lower() in ("1", "true")
        except ValueError:
            raise ValueError(f"{name} must be a {type(default).__name__}, not {text!r}") from None
    record.validate(**out)
    return out


def add_parser(subparsers):
    """Register ``board build`` and ``board run`` on the CLI's subparsers."""
    from .synth.board import BOARDS, DEFAULT_BAUD
    p = subparsers.add_parser("board", help="bitstreams for ECP5 boards and golden-checked "
                                            "runs on them (docs/board.md)")
    sub = p.add_subparsers(dest="board_command", required=True)
    b = sub.add_parser("build", help="wrap a unit in the UART bridge and build a bitstream")
    b.add_argument("--board", required=True, choices=sorted(BOARDS))
    b.add_argument("--unit", required=True)
    b.add_argument("--param", action="append", metavar="NAME=VALUE", help="generator parameter")
    b.add_argument("--baud", type=int, default=DEFAULT_BAUD)
    b.add_argument("--clock", type=float, metavar="MHZ",
                   help="clock the unit and bridge from the FPGA's PLL at this frequency "
                        "(default: the unit's clock on this board from docs/board.md, else "
                        "the board clock)")
    r = sub.add_parser("run", help="golden-checked transactions on a board over its UART")
    r.add_argument("--port", required=True, help="serial port (e.g. /dev/ttyUSB0)")
    r.add_argument("--unit", required=True)
    r.add_argument("--param", action="append", metavar="NAME=VALUE", help="generator parameter")
    r.add_argument("--baud", type=int, default=DEFAULT_BAUD)
    r.add_argument("--count", type=int, default=200, help="random transactions (after corners)")
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--timeout", type=float, default=0.25, help="seconds per read")
    r.add_argument("--retries", type=int, default=8, help="retries of one request")
    r.add_argument("--lazy", action="store_true",
                   help="read answers only when every input is BUSY (back-pressure test)")


def run(args):
    """Carry out a parsed ``board`` command; returns the exit status (errors raise
    ``ValueError``/``RuntimeError``, which the CLI prints as one line with status 2)."""
    params = _params(args.unit, args.param)
    if args.board_command == "build":
        from .synth.board import bitstream
        from .synth.board import UNIT_CLOCKS
        clock = args.clock if args.clock else UNIT_CLOCKS.get((args.unit, args.board))
        fig = bitstream(args.board, args.unit, params, baud=args.baud, clock_mhz=clock,
                        log=print)
        print(f"wrote {fig['bitstream']}")
        return 0
    traffic(args.unit)
    try:
        import serial
    except ImportError:
        raise RuntimeError("pyserial is not installed: pip install 'pyserial==3.5'") from None
    try:
        port = serial.Serial(args.port, args.baud, timeout=args.timeout)
    except serial.SerialException as exc:
        raise RuntimeError(f"cannot open {args.port}: {exc}") from None
    with port:
        summary = run_regression(port, args.unit, params, count=args.count, seed=args.seed,
                                 retries=args.retries, lazy=args.lazy)
    return 1 if summary["errors"] else 0

