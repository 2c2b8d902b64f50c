"""Board target: bridge protocol pieces, host driver errors, platforms, CLI; the bridge + unit
in cocotb driven by the host code (``-m sim``); one bitstream build (``-m synth``)."""

import random

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from attnforge.board import Link, LinkError, _params, ident
from attnforge.cli import main
from attnforge.rtl import build
from attnforge.rtl.bridge import (ACK, DATA, RESET, SOF, Bridge, crc16, crc16_byte, descriptor,
                                  stream_ports)


class Loop(wiring.Component):
    """A trivial unit: a byte stream in, the same stream out."""
    i: In(stream.Signature(8))
    o: Out(stream.Signature(8))

    def elaborate(self, platform):
        m = Module()
        wiring.connect(m, wiring.flipped(self.i), wiring.flipped(self.o))
        return m


def test_crc16_golden_and_residue():
    assert crc16(b"123456789") == 0x29B1              # CRC-16/CCITT-FALSE check value
    frame = Link.frame(RESET, 7, 0)
    assert frame[0] == SOF and list(frame[1:5]) == [RESET, 7, 0, 0]
    assert crc16(frame[1:]) == 0                      # what the bridge's decoder checks


def test_crc16_byte_matches_golden():
    m = Module()
    c, b, o = Signal(16), Signal(8), Signal(16)
    m.d.comb += o.eq(crc16_byte(c, b))
    rng = random.Random(1)
    sim = Simulator(m)

    async def bench(ctx):
        for _ in range(300):
            cv, bv = rng.getrandbits(16), rng.getrandbits(8)
            ctx.set(c, cv)
            ctx.set(b, bv)
            assert ctx.get(o) == crc16(bytes([bv]), cv)
    sim.add_testbench(bench)
    sim.run()


def test_ports_follow_the_signature():
    mac = build("mac", frac_bits=0, max_depth=8)
    bridge = Bridge(mac, divisor=4)
    assert [(n, d) for n, d, _ in bridge.ports] == [("a", "in"), ("w", "in"), ("o", "out")]
    assert [b for _, _, b in bridge.ports] == [3, 3, (8 * mac.acc_bits + 4 + 7) // 8]
    info = descriptor(mac, b"\x01\x02\x03\x04")
    assert info[:2] == bytes([1, 3]) and info[-4:] == b"\x01\x02\x03\x04"
    assert ident("mac", {"max_depth": 8}) != ident("mac", {"max_depth": 16})
    assert ident("mac", {}) == ident("mac", {"max_depth": 1024, "frac_bits": 8})


def test_non_stream_member_is_refused():
    class Plain(wiring.Component):
        x: In(4)
        o: Out(stream.Signature(8))

        def elaborate(self, platform):
            return Module()
    with pytest.raises(ValueError, match="stream members only; Plain.x is not a stream"):
        stream_ports(Plain())


class DeadPort:
    """A serial port nobody answers on."""

    def __init__(self):
        self.written = b""

    def write(self, data):
        self.written += data

    def read(self, n):
        return b""


class ScriptedPort(DeadPort):
    """Answers every request with one fixed answer type (echoing the sequence number)."""

    def __init__(self, rtype):
        super().__init__()
        self.rtype, self.pending = rtype, b""

    def write(self, data):
        super().write(data)
        self.pending += Link.frame(self.rtype, data[2], 0)

    def read(self, n):
        out, self.pending = self.pending[:n], self.pending[n:]
        return out


def test_dead_line_is_one_line_error():
    port = DeadPort()
    with pytest.raises(LinkError, match="no valid answer to RESET") as exc:
        Link(port, retries=2).reset()
    assert "\n" not in str(exc.value)
    assert port.written.count(bytes([SOF, RESET, 0])) == 3     # same seq on every retry


def test_wrong_answer_is_protocol_error():
    with pytest.raises(LinkError, match="protocol error: RESET answered with DATA"):
        Link(ScriptedPort(DATA)).reset()
    Link(ScriptedPort(ACK)).reset()


def test_param_parsing():
    assert _params("mac", ["frac_bits=0", "max-depth=8"]) == {"frac_bits": 0, "max_depth": 8}
    with pytest.raises(ValueError, match="frac_bits must be an integer in"):
        _params("mac", ["frac_bits=99"])
    with pytest.raises(ValueError, match="--param must be NAME=VALUE"):
        _params("mac", ["nosuch=1"])


@pytest.mark.parametrize("argv, message", [
    (["board", "run", "--port", "/dev/null-nosuch", "--unit", "nosuch"], "unit must be one of"),
    (["board", "run", "--port", "/dev/null-nosuch", "--unit", "mac"], "cannot open"),
    (["board", "build", "--board", "ulx3s-85f", "--unit", "mac", "--param", "x=1"],
     "--param must be NAME=VALUE"),
    (["board", "build", "--board", "ulx3s-85f", "--unit", "mac", "--baud", "20000000"],
     "baud must be at most"),
    (["board", "build", "--board", "ulx3s-85f", "--unit", "nosuch"], "unit must be one of"),
])
def test_cli_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


@pytest.mark.parametrize("name, pins", [("ulx3s-85f", ("M1", "L4")),
                                        ("orangecrab-r0.2", ("N17", "M18"))])
def test_platform_puts_the_uart_on_the_pins(name, pins, tmp_path):
    from attnforge.synth.board import BoardTop, platform
    plat = platform(name)
    assert "dfu-suffix" not in plat.required_tools
    plan = plat.prepare(BoardTop(Loop(), baud=115200), name="top")
    lpf = plan.files["top.lpf"]
    for pin in pins:
        assert f'SITE "{pin}"' in lpf
    assert "FREQUENCY" in lpf


#: The bridge simulation's point of each unit with board traffic (small: a Verilator build
#: each); ``all`` runs every cocotb test of testbench/bridge.py, else only ``regression``
#: (``corners``: its corner transactions alone -- the lane's heads cost ~250 round trips each).
SIM_POINTS = [
    ("mac", {"frac_bits": 0, "max_depth": 8}, "all"),
    ("topk", {"max_n": 16, "score_bits": 8, "per_beat": 4, "digit_bits": 4}, "all"),
    ("detector", {"per_beat": 4, "max_len": 16, "score_bits": 4, "sched_lanes": 3},
     "regression"),
    ("softmax", {"per_beat": 3, "max_len": 12, "in_bits": 8, "in_frac": 4, "out_frac": 6,
                 "table_bits": 8, "index_bits": 4, "recip_steps": 2}, "regression"),
    ("progressive_quant", {"dim": 6, "macs": 3, "q_bits": 6, "msb_bits": 6, "lsb_bits": 4,
                           "word_bits": 32, "per_beat": 3, "max_len": 12, "in_bits": 12,
                           "in_frac": 4, "out_frac": 6, "score_shift": 2}, "regression"),
    ("sparse_softmax", {"per_beat": 2, "max_len": 8, "score_bits": 4, "sched_lanes": 2,
                        "out_per_beat": 2, "in_frac": 2}, "regression"),
    ("rmmu", {"rows": 2, "cols": 1, "groups": 2, "tile_m": 2, "max_m": 8, "max_k": 8,
              "max_n": 8}, "regression"),
    # the lane's record SimPoint "t32-d8-4x2" (= its defaults)
    ("lane", {"max_t": 32, "d": 8, "max_m": 4, "rows": 4, "cols": 2, "est_rows": 1,
              "block": 8}, "corners"),
]


def test_every_bridgeable_unit_has_traffic():
    """Every unit whose members are all streams (what the bridge carries) can be driven from
    the host, and each traffic class runs in the simulated board regression below."""
    from attnforge.board import TRAFFIC
    from attnforge.rtl import UNITS
    bridgeable = set()
    for name, record in UNITS.items():
        component = record.build()
        component._MustUse__silence = True
        try:
            stream_ports(component)
        except ValueError:
            continue
        bridgeable.add(name)
    assert bridgeable == set(TRAFFIC)
    simulated = {unit for unit, _, _ in SIM_POINTS}
    assert {cls for name, cls in TRAFFIC.items() if name in simulated} == set(TRAFFIC.values())


@pytest.mark.parametrize("unit, params, _", SIM_POINTS)
def test_traffic_program(unit, params, _):
    """A program is reproducible from its seed, has corner and random transactions, packs into
    the ports' payloads, and the golden answers compare equal to themselves after a round trip
    through the payload bits (and a changed answer is reported)."""
    from attnforge.board import traffic
    from attnforge.rtl.bridge import payload_bits
    from attnforge.testbench.kit import Codec
    component = build(unit, **params)
    gen = traffic(unit)(component)
    writes, expected = gen.program(random.Random(3), 4)
    assert (writes, expected) == gen.program(random.Random(3), 4)
    no_corners = gen.program(random.Random(3), 4, corners=False)
    assert sum(map(len, no_corners[0].values())) < sum(map(len, writes.values()))
    ports = {name: (flow, sig) for name, flow, sig in stream_ports(component)}
    assert set(writes) == {n for n, (flow, _) in ports.items() if flow == In}
    assert set(expected) == {n for n, (flow, _) in ports.items() if flow == Out}
    for name, items in expected.items():
        assert items, f"no answers expected on {name}"
        codec = Codec(ports[name][1].members["payload"].shape)
        for item in items:
            bits = codec.pack(item)
            assert bits < 1 << payload_bits(ports[name][1])
            assert gen.compare(name, item, codec.unpack(bits)) is None
        wrong = codec.unpack(codec.pack(items[0]) ^ 1)      # the first field's low bit
        assert gen.compare(name, items[0], wrong) is not None


#: Units whose simulated board run is in `make test`; the others (one Verilator build of bridge +
#: unit each, 1-7 minutes; the lane's run ~3 minutes more) run in `make long` (marker `long`),
#: which keeps a fresh clone's `make test` within its 15-minute budget.
IN_MAKE_TEST = ("mac", "topk")


@pytest.mark.sim
@pytest.mark.parametrize("unit, params, tests", [
    p if p[0] in IN_MAKE_TEST else pytest.param(*p, marks=pytest.mark.long) for p in SIM_POINTS])
def test_bridge_in_simulation(unit, params, tests):
    """The bridge around the unit on Verilator, driven by the host driver through a UART model:
    clean regression with back-pressure (every answer bit exact against the golden model), and
    for the MAC and top-k also corrupted frames retried, link reset, refused frames (cocotb).
    The protocol tests are the bridge's, not the unit's: two units cover them; the others run
    one short regression each (one Verilator build each is most of the cost)."""
    from attnforge.testbench.bridge import simulate
    if tests == "all":
        assert simulate(unit, params, count=8) == 4
    else:
        assert simulate(unit, params, testcase="regression",
                        count=0 if tests == "corners" else 4) == 1


def test_pll_dividers_match_ecppll():
    """The PLL settings are those Trellis's ``ecppll`` picks (checked by hand with
    ``yowasp-ecppll -i 48 -o 24`` and ``-i 25 -o 20``); impossible clocks are refused."""
    from attnforge.synth.board import pll_dividers
    assert pll_dividers(48e6, 24e6) == (2, 1, 25, 24e6)
    assert pll_dividers(25e6, 20e6) == (5, 4, 30, 20e6)
    with pytest.raises(ValueError, match="clock must be within 1 % of .* not 1000 MHz"):
        pll_dividers(25e6, 1000e6)


def test_pll_top_drives_sync_from_the_pll():
    """With a unit clock, the board clock pin feeds an EHXPLLL and the platform's own clock
    domain is not created; the UART divisor follows the PLL clock."""
    from attnforge.synth.board import BoardTop, platform
    plat = platform("ulx3s-85f")
    plan = plat.prepare(BoardTop(Loop(), baud=115200, clock_hz=20e6), name="top")
    il = plan.files["top.il"]
    assert "EHXPLLL" in il and "CLKOP_DIV" in il and 'SITE "G2"' in plan.files["top.lpf"]
    assert il.count("cell \\EHXPLLL") == 1


@pytest.mark.synth
def test_bitstream_of_a_small_design():
    """A complete ULX3S-85F bitstream (Yosys, nextpnr, ecppack from PyPI) of the bridge around
    a trivial unit, clocked from the PLL at 20 MHz; figures come from nextpnr's report, which
    derives the PLL's output clock from its settings."""
    from pathlib import Path

    from attnforge.synth.board import bitstream
    fig = bitstream("ulx3s-85f", "loop", component=Loop(), clock_mhz=20)
    assert Path(fig["bitstream"]).stat().st_size > 100_000
    assert fig["fmax"] >= fig["clock_mhz"] == 20.0 and fig["pll"]
    assert 0 < fig["luts"] < 2000 and fig["dsps"] == 0


class Products(wiring.Component):
    """A byte stream through ``depth`` registered 18 x 18 multiplications (no back-pressure
    inside): DSP blocks in bulk, cheap for Yosys, more than a small ECP5 has."""
    i: In(stream.Signature(8))
    o: Out(stream.Signature(8))

    def __init__(self, depth):
        self.depth = depth
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        x, valid = self.i.payload, self.i.valid
        for k in range(self.depth):
            d, v = Signal(18, name=f"d{k}"), Signal(name=f"v{k}")
            m.d.sync += [d.eq(x * (x + k + 1)), v.eq(valid)]
            x, valid = d, v
        m.d.comb += [self.i.ready.eq(1), self.o.payload.eq(x), self.o.valid.eq(valid)]
        return m


@pytest.mark.synth
def test_bitstream_refuses_what_does_not_fit():
    """30 multipliers (29 in DSPs) on the LFE5U-25F (28 DSPs): refused in one line after Yosys, before
    nextpnr would spend long minutes trying to place it."""
    from attnforge.synth.board import bitstream
    with pytest.raises(RuntimeError, match="does not build for orangecrab-r0.2 .*: ERROR: does "
                                           "not fit the LFE5U-25F: needs \\d+ DSPs \\(has 28\\)") as exc:
        bitstream("orangecrab-r0.2", "products", component=Products(30))
    assert "\n" not in str(exc.value)


@pytest.mark.synth
def test_bitstream_refuses_a_missed_clock(monkeypatch):
    """A board clock above the achieved Fmax is refused in one line (the verdict reads the
    board's clock: here a platform that claims 400 MHz)."""
    from attnforge.synth import board as sb
    real = sb.platform

    def fast(name):
        plat = real(name)

        class Fast(type(plat)):
            default_clk_frequency = 400e6
        return Fast()
    monkeypatch.setattr(sb, "platform", fast)
    with pytest.raises(RuntimeError, match="misses timing on ulx3s-85f: Fmax .* < board clock "
                                           "400.0 MHz") as exc:
        sb.bitstream("ulx3s-85f", "loop", component=Loop())
    assert "\n" not in str(exc.value)


def test_cli_run_on_a_silent_serial_port(capsys):
    """`board run` through a real pyserial port (a pseudo-terminal nobody answers on): a
    one-line error and status 2 after the retries, no hang."""
    import os
    master, slave = os.openpty()
    try:
        argv = ["board", "run", "--port", os.ttyname(slave), "--unit", "mac", "--timeout",
                "0.05", "--retries", "1"]
        assert main(argv) == 2
    finally:
        os.close(master)
        os.close(slave)
    err = capsys.readouterr().err.strip()
    assert "no valid answer to RESET" in err and "\n" not in err


@pytest.mark.slow
@pytest.mark.parametrize("unit, params", [
    ("topk", {"max_n": 16, "score_bits": 8, "per_beat": 4}),
    ("rmmu", {"rows": 2, "cols": 1, "groups": 2, "tile_m": 2, "max_m": 8, "max_k": 8,
              "max_n": 8}),
])
def test_bridge_lint_clean(tmp_path, unit, params):
    """The bridge around a unit passes ``verilator --lint-only -Wall`` with the project's
    waivers (testbench/runner.py), like every unit (the RMMU: slots of nested streams)."""
    import shutil
    import subprocess

    from attnforge.rtl import EmitPlatform
    from attnforge.testbench.runner import VERILATOR_WAIVERS
    from attnforge.tools import verilator_env
    text = EmitPlatform().convert(Bridge(build(unit, **params), divisor=217, ident=b"abcd"),
                                  name="bridge_top")
    (tmp_path / "bridge_top.v").write_text(text)
    env = verilator_env()
    proc = subprocess.run([shutil.which("verilator", path=env["PATH"]), "--lint-only", "-Wall",
                           *VERILATOR_WAIVERS, "bridge_top.v"], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
