"""cocotb bench of the UART host bridge (:mod:`attnforge.rtl.bridge`) around a unit, driven by
the board's own host code (:mod:`attnforge.board`) through a simulated serial port.

:class:`SimSerial` is a pyserial-like object (``read(n)``, ``write(data)``, ``timeout``) whose
bytes go through a UART model on the DUT's ``rx``/``tx`` pins (8N1, ``divisor`` clock cycles
per bit); its read timeout is counted in simulated clock cycles. The host code runs in a thread
(``cocotb.task.bridge``) and reaches the simulator through ``cocotb.task.resume``, so the very
functions ``attnforge board run`` calls on a real port run here unchanged. A ``fault`` hook
corrupts, drops or inserts bytes in either direction.

:func:`simulate` emits ``Bridge(unit)`` as Verilog module ``bridge_top``, builds it with
Verilator (once per Verilog text) and runs the tests below; ``tests/test_board.py`` calls it.
"""

import json
import os
import random

import cocotb
from cocotb.task import bridge, resume
from cocotb.triggers import ClockCycles, Event, FallingEdge, First, RisingEdge, Timer
from cocotb.utils import get_sim_time

from ..board import Link, LinkError, exchange, run_regression, traffic
from amaranth.lib.wiring import In, Out

from ..rtl.bridge import IDLE_BYTES, EMPTY, NAK, READ, SOF, WRITE, payload_bits, payload_bytes, stream_ports
from .kit import PARAMS_ENV, UNIT_ENV, make_rng, start, unit_under_test

__all__ = ["DIVISOR", "SimSerial", "simulate"]

#: Clock cycles per UART bit in simulation (the fastest the receiver allows).
DIVISOR = 4
PERIOD_NS = 10
#: Transactions per random campaign (after the corner ones).
COUNT_ENV = "ATTNFORGE_BRIDGE_COUNT"


class SimSerial:
    """pyserial-like port on the DUT's UART pins (see the module docstring).

    ``write`` returns when the last stop bit has been driven (the line model has no buffer to
    hide a lost frame in); ``read(n)`` returns up to ``n`` bytes, fewer when ``timeout_cycles``
    pass first. ``fault(direction, index, byte) -> bytes`` (direction ``"to_dut"`` or
    ``"from_dut"``, index counting that direction's bytes) replaces each byte.
    """

    def __init__(self, dut, *, divisor=DIVISOR, timeout_cycles=None, fault=None):
        self.dut, self.divisor, self.fault = dut, divisor, fault
        self.timeout_cycles = timeout_cycles or 10 * divisor * 300      # 300 byte times
        self.counts = {"to_dut": 0, "from_dut": 0}
        self.received = bytearray()
        self.arrived = Event()
        dut.rx.value = 1
        self._monitor_task = cocotb.start_soon(self._monitor())
        self.read = resume(self._read)
        self.write = resume(self._write)

    @property
    def timeout(self):
        """Read timeout in seconds of simulated time (pyserial's attribute)."""
        return self.timeout_cycles * PERIOD_NS * 1e-9

    def _apply(self, direction, data):
        if self.fault is None:
            self.counts[direction] += len(data)
            return bytes(data)
        out = bytearray()
        for b in data:
            out += self.fault(direction, self.counts[direction], b)
            self.counts[direction] += 1
        return bytes(out)

    async def _write(self, data):
        clk = self.dut.clk
        await RisingEdge(clk)
        for byte in self._apply("to_dut", data):
            for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                self.dut.rx.value = bit
                await ClockCycles(clk, self.divisor)
        return len(data)

    async def _read(self, n):
        end = get_sim_time("ns") + self.timeout_cycles * PERIOD_NS
        while len(self.received) < n:
            left = int(end - get_sim_time("ns"))
            if left <= 0:
                break
            self.arrived.clear()
            await First(self.arrived.wait(), Timer(left, unit="ns"))
        out = bytes(self.received[:n])
        del self.received[:n]
        return out

    async def _monitor(self):
        clk, tx, d = self.dut.clk, self.dut.tx, self.divisor
        while True:
            await FallingEdge(tx)
            await ClockCycles(clk, d + d // 2)
            byte = 0
            for i in range(8):
                byte |= int(tx.value) << i
                await ClockCycles(clk, d)
            if int(tx.value):                                 # stop bit
                self.received += self._apply("from_dut", [byte])
                self.arrived.set()

    def stop(self):
        self._monitor_task.cancel()


def _count(default):
    return int(os.environ.get(COUNT_ENV, default))


async def _setup(dut, **kw):
    dut.rx.value = 1                                          # idle line from time 0
    await start(dut, period_ns=PERIOD_NS)
    unit = unit_under_test()
    # Read timeout: the longest frame, plus the bridge's idle time-out, plus margin.
    longest = max(payload_bytes(payload_bits(sig)) for _, _, sig in stream_ports(unit))
    kw.setdefault("timeout_cycles", 10 * DIVISOR * (longest + 7 + IDLE_BYTES + 8))
    return unit, SimSerial(dut, **kw)


def _name_params():
    return os.environ[UNIT_ENV], json.loads(os.environ.get(PARAMS_ENV, "{}"))


@cocotb.test()
async def regression(dut):
    """INFO, RESET, corner + random transactions, every answer checked against the golden
    model, no retry needed on a clean line. The host reads answers only when every input is
    BUSY (``lazy``): the unit runs into back-pressure, and BUSY answers must occur."""
    _, port = await _setup(dut)
    name, params = _name_params()
    seed = make_rng("bridge").randrange(1 << 30)
    summary = await bridge(run_regression)(port, name, params, count=_count(40), seed=seed,
                                           log=dut._log.info, lazy=True)
    assert not summary["errors"], summary["errors"][:3]
    assert summary["checked"] > 0 and summary["retries"] == 0, summary
    assert summary["busy"] > 0, "flow control (a BUSY port) was not exercised"


@cocotb.test()
async def corrupted_frames(dut):
    """Bit flips, dropped bytes and garbage (SOF bytes included) in both directions: frames
    are rejected (CRC, NAK, timeout) and retried; nothing is lost or duplicated."""
    rng = make_rng("bridge.faults")

    def fault(direction, index, byte):
        r = rng.random()
        if r < 0.003:
            return bytes([byte ^ (1 << rng.randrange(8))])   # bit flip
        if r < 0.0045:
            return b""                                      # byte lost
        if r < 0.006:
            return bytes([byte, 0x7E, rng.randrange(256)])  # garbage after it
        return bytes([byte])

    _, port = await _setup(dut, fault=fault)
    name, params = _name_params()
    seed = make_rng("bridge.faults.seed").randrange(1 << 30)
    summary = await bridge(run_regression)(port, name, params, count=_count(40), seed=seed,
                                           log=dut._log.info, retries=20)
    assert not summary["errors"], summary["errors"][:3]
    assert summary["retries"] > 0 and summary["crc_errors"] + summary["naks"] > 0, summary


@cocotb.test()
async def link_reset(dut):
    """A link reset in the middle of a program (a packet and a tile half sent, answers
    unread): the unit restarts from power-up state, nothing from before survives, and a fresh
    program then checks bit exact."""
    unit, port = await _setup(dut)
    name, params = _name_params()
    gen = traffic(name)(unit)
    rng = random.Random(make_rng("bridge.reset").randrange(1 << 30))

    def host():
        link = Link(port)
        link.reset()
        writes, expected = gen.program(rng, 10, corners=False)
        # Play part of the program and leave answers unread, then reset the link.
        def interrupt(rnd):
            if rnd == 6:
                raise _Interrupted
        try:
            exchange(link, unit, writes, expected, gen.compare, on_round=interrupt)
            raise AssertionError("the program ended before the interruption")
        except _Interrupted:
            pass
        link.reset()
        for pid, (pname, flow, _sig) in enumerate(stream_ports(unit)):
            if flow == Out:
                assert link.request(READ, pid)[0] == EMPTY, f"{pname}: data survived the reset"
        writes, expected = gen.program(rng, 10, corners=False)
        return exchange(link, unit, writes, expected, gen.compare)

    checked, errors = await bridge(host)()
    assert checked and not errors, errors[:3]


class _Interrupted(Exception):
    pass


@cocotb.test()
async def bad_frames(dut):
    """Requests the bridge must refuse with NAK and without effect: a WRITE of the wrong
    length, to an output port or an unknown port, a READ of an input port; a dead line gives a
    one-line LinkError, never a hang."""
    unit, port = await _setup(dut)
    ports = stream_ports(unit)
    in_pid = next(i for i, (_, flow, _) in enumerate(ports) if flow == In)
    out_pid = next(i for i, (_, flow, _) in enumerate(ports) if flow == Out)
    in_bytes = payload_bytes(payload_bits(ports[in_pid][2]))

    def host():
        link = Link(port, retries=0)
        link.reset()
        answers = []
        for rtype, pid, payload in [(WRITE, in_pid, bytes(in_bytes + 1)),
                                    (WRITE, in_pid, bytes(in_bytes - 1)),
                                    (WRITE, out_pid, b"\x00"), (WRITE, 200, b"\x00"),
                                    (READ, in_pid, b""), (0x55, 0, b"")]:
            seq = link.seq
            link.port.write(Link.frame(rtype, seq, pid, payload))
            answers.append(_raw_answer(link))
            link.seq = (seq + 1) & 0xFF
        return answers

    answers = await bridge(host)()
    assert all(a == NAK for a in answers), answers

    # A line that never answers: the host gives up after its retries with one line.
    dut_tx_dead = SimSerial(dut, fault=lambda d, i, b: b"" if d == "from_dut" else bytes([b]))

    def dead():
        try:
            Link(dut_tx_dead, retries=1).reset()
        except LinkError as exc:
            return str(exc)
        return None

    message = await bridge(dead)()
    dut_tx_dead.stop()
    assert message and "\n" not in message and "no valid answer" in message, message
    port.stop()


def _raw_answer(link):
    """Type byte of the next answer frame (NAKs included), or None."""
    while True:
        b = link.port.read(1)
        if not b:
            return None
        if b[0] == SOF:
            break
    head = link.port.read(4)
    link.port.read(head[3] + 2)
    return head[0]


# -- pytest side: build the bridge-wrapped unit and run the tests above ----------------------
def simulate(unit, params=None, *, testcase=None, seed=None, waves=None, count=None):
    """Run this module's cocotb tests on ``Bridge(unit)`` (divisor :data:`DIVISOR`): the
    runner's build and run (:func:`attnforge.testbench.runner.run`, Verilog cached per text,
    seeds and reproduce command), with the bridge wrapped around the unit; raises
    ``AssertionError`` on failure."""
    from ..board import ident
    from ..rtl.bridge import Bridge
    from .runner import run

    params = dict(params or {})
    return run(unit, params, test_module="attnforge.testbench.bridge", testcase=testcase,
               seed=seed, waves=waves,
               extra_env={COUNT_ENV: str(count)} if count is not None else None,
               wrap=lambda dut: Bridge(dut, divisor=DIVISOR, idle_bytes=IDLE_BYTES,
                                       ident=ident(unit, params)))
