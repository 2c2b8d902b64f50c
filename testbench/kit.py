"""The shared cocotb kit: clock and reset, stream drivers and monitors, the scoreboard, seeds.

Every unit's testbench is built from these pieces, in the style of cocotb's
``examples/matrix_multiplier``: a *driver* (:class:`StreamSource`) puts transactions on an
input stream with random valid gaps, a *monitor* (:class:`StreamSink`) takes them off an output
stream under random ready back-pressure, the *model* is the unit's golden model, and the
*checker* (:class:`Scoreboard`) compares every transaction in order. :class:`Bench` is the
skeleton every unit's bench extends: it owns the clock, the reset (which the drivers, monitors
and scoreboards obey), the seeded random streams and the figures.

Payloads are Amaranth ``data.Layout`` values; a stream whose payload is a struct appears in the
Verilog as one flat port (``a__payload``), and :class:`Codec` converts between a field dict and
that port's bits using the very layout object the generator used, so no field offset is written
down twice.

Timing convention: values read right after ``await RisingEdge(clk)`` are the values just before
that edge, i.e. exactly what the DUT sampled. Drivers change inputs right after an edge.
"""

import json
import logging
import os
import random

import cocotb
from amaranth.hdl import Shape
from amaranth.lib import data
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotb.utils import get_sim_time

__all__ = [
    "PARAMS_ENV", "UNIT_ENV", "FIGURES_ENV", "unit_under_test", "record_figures", "make_rng", "reset", "start",
    "Codec", "View", "pack", "unpack", "corner_ints", "StreamSource", "StreamSink", "Scoreboard", "BackPressure",
    "Bench", "SCALE_ENV", "STATS_ENV", "FCOV_ENV", "scale", "transactions_checked",
    "coverage_summary", "DELAY_BINS", "RESET_BINS", "SIZE_BINS", "delay_bin", "size_bin",
]

#: Environment variables the runner uses to tell a testbench which generator it is testing.
UNIT_ENV = "ATTNFORGE_UNIT"
PARAMS_ENV = "ATTNFORGE_PARAMS"
#: Where a testbench run by a benchmark writes the figures it measured (JSON).
FIGURES_ENV = "ATTNFORGE_FIGURES"
#: Factor on the testbenches' transaction counts (``make soak``): read with :func:`scale`.
SCALE_ENV = "ATTNFORGE_SCALE"
#: Where the kit writes how many transactions its scoreboards checked (JSON; the runner reads it).
STATS_ENV = "ATTNFORGE_STATS"
#: Where the kit writes the functional coverage of :meth:`Bench.coverpoint` bins (JSON).
FCOV_ENV = "ATTNFORGE_FCOV"

log = logging.getLogger("attnforge.tb")


def unit_under_test():
    """The generator instance the simulated Verilog came from (built from the runner's env).

    Only the Python object is built -- nothing is elaborated -- so testbenches can read its
    layouts and properties (``acc_bits``, ``max_depth`` ...) for free.
    """
    from ..rtl import build
    unit = build(os.environ[UNIT_ENV], **json.loads(os.environ.get(PARAMS_ENV, "{}")))
    unit._MustUse__silence = True       # read-only use: never elaborated here on purpose
    return unit


def record_figures(figures):
    """Write measured figures (a JSON-able dict) where a benchmark asked for them, if it did."""
    path = os.environ.get(FIGURES_ENV)
    if path:
        with open(path, "w") as f:
            json.dump(figures, f, indent=1)


def scale(n, minimum=1):
    """``n`` (a transaction, packet or row count of a testbench) times ``$ATTNFORGE_SCALE``
    (default 1), rounded, at least ``minimum``.

    ``make soak`` runs every testbench with a scale above 1 (``SOAK_SCALE``), quick mutant runs
    with one below 1: a testbench writes ``scale(1500)`` where it would write ``1500`` for the
    bulk of its random stimulus (not for corner cases whose count is fixed by the design, such
    as one packet per mode).
    """
    factor = float(os.environ.get(SCALE_ENV) or 1)
    return max(minimum, int(round(n * factor)))


_checked = [0]          # transactions checked by every scoreboard of this simulator process
_by_board = {}          # the same per scoreboard name (a soak reports what a transaction is)


def transactions_checked():
    """Transactions every :class:`Scoreboard` of this simulation has checked so far."""
    return _checked[0]


def _write_stats():
    path = os.environ.get(STATS_ENV)
    if path:
        with open(path, "w") as f:
            json.dump({"transactions": _checked[0], "scoreboards": _by_board}, f)


def make_rng(salt=""):
    """A ``random.Random`` derived from cocotb's seed (``COCOTB_RANDOM_SEED``) and ``salt``.

    Each testbench stream gets its own generator, so changing one stream's delays does not
    reshuffle the data of another; rerunning with the logged seed reproduces every choice.
    """
    seed = cocotb.RANDOM_SEED
    log.info("seed %d (reproduce with SEED=%d)", seed, seed)
    return random.Random(f"{seed}/{salt}")


class Codec:
    """Packs field dicts into a flat payload's bits and unpacks bits into attribute views.

    Built once per layout by walking the Amaranth ``data.Layout`` (offsets, widths,
    signedness), so the per-transaction cost is a few shifts instead of an Amaranth constant.
    Nested structs unpack to nested views, arrays to lists.
    """

    def __init__(self, layout):
        self.layout = layout
        self.fields = []                 # (name, offset, width, signed, sub-codec or None)
        for name, field in layout:
            shape = field.shape
            sub = Codec(shape) if isinstance(shape, data.Layout) else None
            signed = False if sub else Shape.cast(shape).signed
            self.fields.append((name, field.offset, field.width, signed, sub))
        self.is_array = isinstance(layout, data.ArrayLayout)

    def pack(self, fields):
        bits = 0
        for name, offset, width, _, sub in self.fields:
            value = fields[name] if self.is_array else fields.get(name, 0)
            value = sub.pack(value) if sub else int(value)
            bits |= (value & ((1 << width) - 1)) << offset
        return bits

    def unpack(self, bits):
        bits = int(bits)
        values = []
        for name, offset, width, signed, sub in self.fields:
            raw = (bits >> offset) & ((1 << width) - 1)
            if sub:
                values.append(sub.unpack(raw))
            else:
                values.append(raw - (1 << width) if signed and raw >> (width - 1) else raw)
        if self.is_array:
            return values
        return View({f[0]: v for f, v in zip(self.fields, values)})


class View(dict):
    """A payload unpacked by :class:`Codec`: a dict whose fields also read as attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def pack(layout, fields):
    """Bits of a payload given as a field dict (missing fields are 0)."""
    return Codec(layout).pack(fields)


def unpack(layout, bits):
    """Payload bits as a :class:`View`: ``v.mode``, ``v.lanes[3]``."""
    return Codec(layout).unpack(bits)


def corner_ints(rng, bits, n, corner=0.3):
    """``n`` random signed ``bits``-bit ints; each is, with probability ``corner``, an edge
    value (most negative, most positive, 0, -1 or 1) instead of a uniform draw."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    edges = (lo, hi, 0, -1, 1 if hi >= 1 else 0)
    return [rng.choice(edges) if rng.random() < corner else rng.randint(lo, hi)
            for _ in range(n)]


async def start(dut, period_ns=10, reset_cycles=2):
    """Start ``dut.clk`` and hold ``dut.rst`` for ``reset_cycles`` rising edges."""
    Clock(dut.clk, period_ns, unit="ns").start()
    await reset(dut, reset_cycles)


async def reset(dut, cycles=2):
    """Synchronous reset pulse (usable mid-test: reset in the middle of a stream)."""
    dut.rst.value = 1
    await ClockCycles(dut.clk, cycles)
    dut.rst.value = 0


class BackPressure:
    """Random delay generator: with probability ``p`` a cycle is a gap/stall, else active.

    ``p = 0`` never stalls. Bursts come from ``burst``: once a stall starts it lasts a uniform
    1..burst cycles, so both single-cycle and long stalls are exercised.
    """

    def __init__(self, rng, p=0.3, burst=4):
        if not 0 <= p < 1:
            raise ValueError(f"p must be in [0, 1), not {p}")
        self.rng, self.p, self.burst = rng, p, burst

    def delay(self):
        """Cycles to wait before the next active cycle."""
        if self.p == 0 or self.rng.random() >= self.p:
            return 0
        return self.rng.randint(1, self.burst)


def _bind_stream(obj, dut, prefix, layout):
    """Attach the clock, the ``<prefix>__valid/ready/payload`` handles and a payload codec."""
    obj.clk = dut.clk
    obj.prefix = prefix
    obj.valid = getattr(dut, f"{prefix}__valid")
    obj.ready = getattr(dut, f"{prefix}__ready")
    obj.payload = getattr(dut, f"{prefix}__payload")
    obj.codec = Codec(layout)


class StreamSource:
    """Driver for an ``In(stream.Signature(layout))`` port named ``prefix`` of the DUT.

    ``send(fields)`` queues a transaction; a background coroutine presents it after a random
    gap and holds valid and payload stable until the DUT takes it (valid never waits on ready).
    ``on_accept(fields)`` is called when the handshake completes.
    """

    def __init__(self, dut, prefix, layout, rng, *, gaps=None, on_accept=None):
        _bind_stream(self, dut, prefix, layout)
        self.gaps = gaps if gaps is not None else BackPressure(rng, 0)
        self.on_accept = on_accept
        self.queue = []
        self.accepted = 0
        self.accept_times = []        # simulation time (ns) of every handshake
        self.last_gap = 0             # valid-low cycles before the last transaction's valid
        self.valid.value = 0
        self._task = None

    def send(self, fields):
        """Queue one transaction (a field dict)."""
        self.queue.append(fields)
        if self._task is None or self._task.done():
            self._task = cocotb.start_soon(self._drive())

    def send_all(self, items):
        for fields in items:
            self.send(fields)

    @property
    def idle(self):
        return not self.queue and (self._task is None or self._task.done())

    def flush(self):
        """Drop every queued transaction and deassert ``valid`` (a reset of the producer)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = None
        self.queue.clear()
        self.valid.value = 0

    async def _drive(self):
        # Runs from right after a rising edge (or at time 0): inputs change between edges.
        i = 0
        while i < len(self.queue):
            gap = self.last_gap = self.gaps.delay()
            if gap:
                self.valid.value = 0
                await ClockCycles(self.clk, gap)
            fields = self.queue[i]
            self.payload.value = self.codec.pack(fields)
            self.valid.value = 1
            while True:
                await RisingEdge(self.clk)
                if self.ready.value:
                    break
            self.accepted += 1
            self.accept_times.append(get_sim_time("ns"))
            if self.on_accept:
                self.on_accept(fields)
            i += 1
        self.valid.value = 0
        del self.queue[:i]


class StreamSink:
    """Monitor for an ``Out(stream.Signature(layout))`` port named ``prefix``.

    Drives ``ready`` with random stalls from ``stalls`` and calls ``callback(view)`` with an
    :func:`unpack`-ed payload for every handshake. Cycles with ``dut.rst`` high are not
    transfers (the monitor obeys reset).
    """

    def __init__(self, dut, prefix, layout, rng, callback, *, stalls=None):
        _bind_stream(self, dut, prefix, layout)
        self.rst = dut.rst
        self.stalls = stalls if stalls is not None else BackPressure(rng, 0)
        self.callback = callback
        self.count = 0
        self.held = 0         # cycles the current transaction waited with valid high, ready low
        self.last_stall = 0   # ``held`` of the last transaction taken
        self.ready.value = 0
        self._task = cocotb.start_soon(self._run())

    async def _run(self):
        stall = 0
        while True:
            if stall:
                stall -= 1
                ready = False
            else:
                stall = self.stalls.delay()
                ready = not stall
            self.ready.value = int(ready)
            await RisingEdge(self.clk)
            if self.rst.value == 1 or self.valid.value != 1:     # (x before the first reset)
                self.held = 0
            elif not ready:
                self.held += 1
            else:
                self.count += 1
                self.last_stall, self.held = self.held, 0
                self.callback(self.codec.unpack(self.payload.value))

    def stop(self):
        self._task.cancel()
        self.ready.value = 0


class Scoreboard:
    """In-order checker: every observed transaction must equal the next expected one.

    ``compare(expected, actual)`` returns ``None`` when they match or a string saying how they
    differ (``actual`` is the monitor's view). Fails on any wrong, extra or reordered
    transaction at once, and on lost ones at :meth:`wait`.
    """

    def __init__(self, name, compare):
        self.name = name
        self.compare = compare
        self.expected = []
        self.checked = 0
        self.errors = []

    def expect(self, item):
        self.expected.append(item)

    def expect_all(self, items):
        self.expected.extend(items)

    def __call__(self, actual):
        index = self.checked
        if index >= len(self.expected):
            self._fail(f"{self.name}: extra transaction #{index}: {actual}")
        diff = self.compare(self.expected[index], actual)
        if diff is not None:
            self._fail(f"{self.name}: transaction #{index} differs: {diff}")
        self.checked += 1
        _checked[0] += 1
        _by_board[self.name] = _by_board.get(self.name, 0) + 1

    def _fail(self, message):
        self.errors.append(message)
        raise AssertionError(message)

    @property
    def done(self):
        return self.checked == len(self.expected)

    def flush(self):
        """Forget what was expected but not yet seen: a reset drops what is in flight."""
        del self.expected[self.checked:]

    async def wait(self, clk, timeout_cycles):
        """Wait until every expected transaction has been seen; fail after ``timeout_cycles``."""
        for _ in range(timeout_cycles):
            if self.errors:
                break
            if self.done:
                _write_stats()
                return
            await RisingEdge(clk)
        _write_stats()
        assert not self.errors, self.errors[0]
        raise AssertionError(f"{self.name}: timeout after {timeout_cycles} cycles, "
                             f"{len(self.expected) - self.checked} of {len(self.expected)} "
                             f"transactions missing")


class Bench:
    """The skeleton every unit's cocotb bench extends.

    It builds the unit under test's generator object (:attr:`unit`, for layouts and
    properties), one seeded random stream per bench (:attr:`rng`, from the logged seed and
    ``name``), and owns the drivers, monitors and scoreboards its subclass declares with
    :meth:`source` and :meth:`sink`. :meth:`reset` asserts reset mid-stream and makes every
    piece obey it: sources drop their queues and deassert ``valid``, monitors ignore the reset
    cycles, scoreboards forget the transactions that were in flight, and :meth:`on_reset` lets
    the subclass forget model state. :meth:`finish` waits for every scoreboard;
    :meth:`figures` hands measured figures to a benchmark.

    ``gaps`` / ``stalls`` are the default probabilities of an input valid gap and an output
    ready stall (each a :class:`BackPressure` with bursts).
    """

    def __init__(self, dut, name, *, gaps=0.3, stalls=0.3):
        self.dut = dut
        self.unit = unit_under_test()
        self.rng = make_rng(name)
        self.gaps, self.stalls = gaps, stalls
        self.sources, self.sinks, self.boards = [], [], []
        self._started = False

    def source(self, prefix, layout, *, gaps=None, on_accept=None):
        """A driver on input stream ``prefix`` (random valid gaps, default :attr:`gaps`).

        Functional coverage: ``<prefix>.valid_gap`` (the valid-low cycles before each
        transaction: none, one, a burst)."""
        point = f"{prefix}.valid_gap"
        self.coverpoint(point, DELAY_BINS, xf=delay_bin)

        def accepted(fields):
            self.cover(point, src.last_gap)
            if on_accept:
                on_accept(fields)
        src = StreamSource(self.dut, prefix, layout, self.rng, on_accept=accepted,
                           gaps=BackPressure(self.rng, self.gaps if gaps is None else gaps))
        self.sources.append(src)
        return src

    def sink(self, prefix, layout, compare=None, *, callback=None, stalls=None, name=None):
        """A monitor on output stream ``prefix`` (random ready stalls, default :attr:`stalls`).

        With ``compare`` every transaction goes through a new :class:`Scoreboard` (returned as
        ``(sink, board)``); ``callback(view)`` is called too (after the board) when given.
        Functional coverage: ``<prefix>.ready_stall`` (the cycles each transaction was held
        valid while ``ready`` was low: none, one, a burst)."""
        board = Scoreboard(name or f"{os.environ.get(UNIT_ENV, 'dut')}.{prefix}", compare) \
            if compare else None
        if board:
            self.boards.append(board)
        point = f"{prefix}.ready_stall"
        self.coverpoint(point, DELAY_BINS, xf=delay_bin)

        def observe(view):
            self.cover(point, snk.last_stall)
            if board:
                board(view)
            if callback:
                callback(view)
        snk = StreamSink(self.dut, prefix, layout, self.rng, observe,
                         stalls=BackPressure(self.rng, self.stalls if stalls is None else stalls))
        self.sinks.append(snk)
        return (snk, board) if board else snk

    async def start(self, period_ns=10, reset_cycles=2):
        """Start the clock and apply the power-on reset."""
        Clock(self.dut.clk, period_ns, unit="ns").start()
        await self.reset(reset_cycles)

    async def reset(self, cycles=2):
        """Reset the DUT now (at any point of a stream); see the class docstring.

        Functional coverage: ``reset_point`` -- the power-up reset, a reset with inputs still
        queued, with outputs still expected (in flight in the DUT), or with neither."""
        self.coverpoint("reset_point", RESET_BINS)
        if not self._started:
            where = "power-up"
        elif not self.idle:
            where = "inputs pending"
        elif not all(board.done for board in self.boards):
            where = "outputs pending"
        else:
            where = "quiet"
        self._started = True
        self.cover("reset_point", where)
        for src in self.sources:
            src.flush()
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, cycles)
        for board in self.boards:
            board.flush()
        self.on_reset()
        self.dut.rst.value = 0

    async def reset_while_busy(self, play, cycles=5):
        """Two resets of a busy DUT: ``play()`` (queue work and its expectations), then a reset
        ``cycles`` cycles later with inputs still queued, and again a reset right after the
        inputs were all taken, with outputs still owed. After each, no output may be valid
        (the reset dropped what was in flight) and the scoreboards forget it."""
        for drained in (False, True):
            play()
            if drained:
                await self.drain_inputs()
            else:
                await ClockCycles(self.dut.clk, cycles)
            await self.reset()
            await ClockCycles(self.dut.clk, 2)
            live = [s.prefix for s in self.sinks if s.valid.value == 1]
            assert not live, f"valid after a reset: {live}"

    def on_reset(self):
        """Hook: forget model state that the reset cleared in the DUT."""

    @property
    def idle(self):
        """Every source has delivered everything queued."""
        return all(src.idle for src in self.sources)

    async def drain_inputs(self):
        """Wait until every source has delivered its queue."""
        while not self.idle:
            await RisingEdge(self.dut.clk)

    async def finish(self, timeout_cycles):
        """Wait until every scoreboard has seen everything expected (fail after the timeout)."""
        try:
            for board in self.boards:
                await board.wait(self.dut.clk, timeout_cycles)
        finally:
            _write_stats()
            _write_fcov()

    def figures(self, figures):
        """Hand measured figures to the benchmark that ran this test (if one did)."""
        record_figures(figures)

    # -- functional coverage (cocotb-coverage underneath) -------------------------------
    def coverpoint(self, name, bins, *, xf=None, rel=None, labels=None, at_least=1):
        """Declare functional-coverage point ``name`` of this unit with ``bins``.

        A sampled value ``v`` hits bin ``b`` when ``rel(xf(v), b)`` (defaults: identity and
        ``==``; the first matching bin only). Bins must be hashable: a cross of two fields is a
        coverpoint on a tuple. ``labels`` name the bins in the report; a bin is a *hole* until
        it has ``at_least`` hits. Declaring the same name again (the next cocotb test of the
        run) keeps the hits. Sample with :meth:`cover`, e.g. in a monitor callback or where a
        transaction is sent. Hits of every run are merged per unit by ``make coverage``.
        """
        return _coverpoint(f"{self.unit_name}.{name}", bins, xf=xf, rel=rel, labels=labels,
                           at_least=at_least)

    def cover(self, name, value):
        """Sample ``value`` into coverpoint ``name`` (declared with :meth:`coverpoint`)."""
        _COVERPOINTS[f"{self.unit_name}.{name}"](value)

    @property
    def unit_name(self):
        return os.environ.get(UNIT_ENV, "dut")


_COVERPOINTS = {}       # full name -> sampling function (one per simulator process)

#: Bins of a valid gap / ready stall in cycles (:func:`delay_bin`).
DELAY_BINS = ("none", "one", "burst")
#: Bins of where a reset hit (:meth:`Bench.reset`).
RESET_BINS = ("power-up", "inputs pending", "outputs pending", "quiet")


#: Bins of a length against its legal maximum (:func:`size_bin`).
SIZE_BINS = ("empty", "1", "between", "max", "over max")


def size_bin(n, top):
    """Where length ``n`` lies against the legal maximum ``top``: ``empty``, ``1``,
    ``between``, ``max`` or ``over max``."""
    return ("empty" if n == 0 else "1" if n == 1 else "max" if n == top else
            "over max" if n > top else "between")


def delay_bin(cycles):
    """``none`` (0 cycles), ``one`` (1) or ``burst`` (2 or more)."""
    return DELAY_BINS[min(cycles, 2)]


def _coverpoint(full_name, bins, *, xf=None, rel=None, labels=None, at_least=1):
    if full_name not in _COVERPOINTS:
        from cocotb_coverage.coverage import CoverPoint
        bins = list(bins)
        point = CoverPoint(full_name, xf=xf, rel=rel, bins=bins,
                           bins_labels=[str(b) for b in (labels or bins)], at_least=at_least)

        def sample(value):
            pass
        _COVERPOINTS[full_name] = point(sample)
    return _COVERPOINTS[full_name]


def coverage_summary():
    """``{coverpoint: {"bins": {label: hits}, "at_least": n, "holes": [labels]}}`` of every
    point declared in this process."""
    if not _COVERPOINTS:
        return {}
    from cocotb_coverage.coverage import coverage_db
    out = {}
    for name in _COVERPOINTS:
        point = coverage_db[name]
        hits = {str(k): int(v) for k, v in point.detailed_coverage.items()}
        at_least = point._at_least
        out[name] = {"bins": hits, "at_least": at_least,
                     "holes": [k for k, v in hits.items() if v < at_least]}
    return out


def _write_fcov():
    path = os.environ.get(FCOV_ENV)
    if path and _COVERPOINTS:
        with open(path, "w") as f:
            json.dump(coverage_summary(), f, indent=1)
