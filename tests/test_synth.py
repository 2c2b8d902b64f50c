"""Synthesis smoke tests: the Yosys and ECP5 flows run and their figures are sane (not benchmarks)."""

import pytest
from amaranth.hdl import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from attnforge.synth.nextpnr import implement
from attnforge.synth.yosys import FF_TRANSISTORS, synthesize

pytestmark = pytest.mark.synth


def test_synthesize_fx16_mac():
    fig = synthesize("mac_fx16", {"max_depth": 4})
    assert fig["cells"] > 1000 and fig["depth"] > 10
    # acc (34) + weights (2 x 16) + pipeline/output registers: FFs are counted
    assert fig["ffs"] > 34 + 32
    assert fig["transistors"] == fig["logic_transistors"] + FF_TRANSISTORS * fig["ffs"]


class _TinyMAC(wiring.Component):
    """8 x 8 multiply (wide enough for a DSP) plus a 3 x 3 one (kept in LUTs), accumulated."""

    def __init__(self):
        super().__init__({"a": In(8), "b": In(8), "c": In(3), "d": In(3), "y": Out(20)})

    def elaborate(self, platform):
        m = Module()
        acc = Signal(signed(20))
        m.d.sync += acc.eq(acc + self.a.as_signed() * self.b.as_signed()
                           + self.c.as_signed() * self.d.as_signed())
        m.d.comb += self.y.eq(acc)
        return m


def test_implement_ecp5_tiny():
    fig = implement("tiny_mac", component=_TinyMAC(), name="tiny_mac")
    assert fig["error"] is None, fig["error"]
    # ports: a, b, c, d in (22 bits), y out (20 bits): one harness FF per bit plus acc (20)
    assert fig["harness_bits"] == 22 + 20
    assert fig["ffs"] >= 42 + 20
    assert fig["dsps"] == 1                      # the 8 x 8 product; the 3 x 3 one is LUTs
    assert fig["luts"] > 20                      # accumulator adder at least
    assert 10 < fig["fmax"] < 1000


@pytest.mark.formal
def test_formal_stream_protocol_mac():
    """The quickest proof of `make formal` (k-induction, a few seconds) passes..."""
    from attnforge.synth.formal import run
    res = run("stream_mac")
    assert res["status"] == "PASS", res


@pytest.mark.formal
def test_formal_flow_finds_a_violation():
    """...and the same flow reports FAIL on a harness whose assertion is false."""
    from amaranth.asserts import AnyConst
    from amaranth.hdl import Assert, Elaboratable

    from attnforge.synth.formal import Proof, run

    class Wrong(Elaboratable):
        def elaborate(self, platform):
            m = Module()
            x = Signal(8)
            m.d.comb += [x.eq(AnyConst(8)), Assert(x * 3 // 3 == x + (x == 77))]
            return m

    res = run(Proof("selftest_wrong", Wrong, "bmc", 1, "a false property"))
    assert res["status"] == "FAIL", res


class _Adder(wiring.Component):
    def __init__(self):
        super().__init__({"a": In(8), "b": In(8), "y": Out(9)})

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.y.eq(self.a + self.b)
        return m


class _FourAdders(wiring.Component):
    """Four copies of one module: shared (emitted once) under EmitPlatform, else inlined."""

    def __init__(self):
        super().__init__({"a": In(32), "b": In(32), "y": Out(36)})

    def elaborate(self, platform):
        from amaranth.hdl import Cat, ClockSignal, Instance, ResetSignal
        m = Module()
        outs = []
        for i in range(4):
            y = Signal(9, name=f"y{i}")
            a, b = self.a[8 * i:8 * i + 8], self.b[8 * i:8 * i + 8]
            if getattr(platform, "shared_module", None):
                name = platform.shared_module("tiny_adder", _Adder())
                m.submodules[f"add{i}"] = Instance(name, i_clk=ClockSignal(), i_rst=ResetSignal(),
                                                   i_a=a, i_b=b, o_y=y)
            else:
                add = m.submodules[f"add{i}"] = _Adder()
                m.d.comb += [add.a.eq(a), add.b.eq(b), y.eq(add.y)]
            outs.append(y)
        m.d.comb += self.y.eq(Cat(*outs))
        return m


def test_synthesize_hierarchical_counts_every_instance():
    from attnforge.rtl import verilog
    assert verilog(_FourAdders(), "four").count("module tiny_adder") == 1
    flat = synthesize("four", component=_FourAdders(), name="four")
    hier = synthesize("four", component=_FourAdders(), name="four", flatten=False)
    one = synthesize("adder", component=_Adder(), name="adder")
    assert hier["ffs"] == flat["ffs"] == 4 * one["ffs"] == 36
    assert hier["logic_transistors"] == 4 * one["logic_transistors"]


class _Buffer(wiring.Component):
    """A 16 x 12 memory with one write and one transparent synchronous read port, and an
    incrementer on the read data."""

    def __init__(self):
        super().__init__({"wa": In(4), "wd": In(12), "we": In(1), "ra": In(4), "rd": Out(12)})

    def elaborate(self, platform):
        from amaranth.lib.memory import Memory
        m = Module()
        m.submodules.mem = mem = Memory(shape=12, depth=16, init=[])
        wr = mem.write_port()
        rd = mem.read_port(transparent_for=(wr,))
        m.d.comb += [wr.addr.eq(self.wa), wr.data.eq(self.wd), wr.en.eq(self.we),
                     rd.addr.eq(self.ra), self.rd.eq(rd.data + 1)]
        return m


def test_memories_are_memory_bits_not_flip_flops():
    fig = synthesize("buffer", component=_Buffer(), name="buffer")
    assert fig["memory_bits"] == 16 * 12
    assert fig["ffs"] == 0                       # storage and read register are the memory's
    assert 0 < fig["logic_transistors"] < 1000   # the incrementer, not 192 flip-flops + muxes
    assert fig["transistors_with_sram"] == fig["transistors"] + 6 * 16 * 12
    assert synthesize("mac_fx16", {"max_depth": 4})["memory_bits"] == 0


def test_implement_ecp5_infers_ram():
    fig = implement("buffer", component=_Buffer(), name="buffer")
    assert fig["error"] is None, fig["error"]
    assert fig["brams"] + fig["lutrams"] >= 1 and fig["ffs"] < 16 * 12


def test_memory_bits_parser():
    from attnforge.synth.yosys import memory_bits
    dump = ("  cell $mem_v2 \\mem\n    parameter \\WIDTH 16\n    parameter \\SIZE 32'00000000000000000000000000100000\n"
            "  cell $mem_v2 \\other\n    parameter \\SIZE 4\n    parameter \\WIDTH 3\n")
    assert memory_bits(dump, "top/mem top/other", "top") == 16 * 32 + 12
    assert memory_bits(dump, "top.g0.acc/mem top/other", "top") == 16 * 32 + 12
    with pytest.raises(ValueError, match="instanced modules"):
        memory_bits(dump, "sub/mem", "top")


def test_unchanged_design_reuses_last_run(monkeypatch):
    monkeypatch.setenv("ATTNFORGE_SYNTH_RERUN", "1")
    first = synthesize("adder", component=_Adder(), name="adder_reuse")
    assert not first["reused"]
    monkeypatch.delenv("ATTNFORGE_SYNTH_RERUN")
    again = synthesize("adder", component=_Adder(), name="adder_reuse")
    assert again["reused"] and {k: v for k, v in again.items() if k not in ("reused", "seconds")} \
        == {k: v for k, v in first.items() if k not in ("reused", "seconds")}
