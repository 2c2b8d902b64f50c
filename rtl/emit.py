"""Verilog emission shared by the Python API, the CLI, the runner and synthesis.

:func:`verilog` / :func:`emit` write a component's Verilog (no source paths in it).
:func:`place` adds a submodule that is written **once** as a Verilog module and instantiated
wherever it is placed (the RMMU's 512 PEs): emission and Verilator builds of large arrays stay
fast, and the hierarchy shows in the Verilog, the waveforms and the area reports.
"""

import re
from pathlib import Path

from amaranth.hdl import ClockSignal, Instance, ResetSignal
from amaranth.lib import wiring

__all__ = ["EmitPlatform", "place", "verilog", "emit", "fix_time0"]

# Yosys's Verilog back end makes every `always @*` block read a dummy register
# (``if (\$auto$verilog_backend.cc:NNNN:dump_module$N ) begin end``) declared as
# ``reg \$auto$... = 0;`` so that the block runs once at time 0. That relies on the declaration
# initializer producing an x -> 0 event, which IEEE 1800 (and Icarus with -g2012, cocotb's mode)
# does not do: variable initializers are applied before time 0 without an event. A block whose
# inputs are all registers that keep their initial value (the top-k engine's `req__ready`) then
# never runs and its outputs stay x forever. The trigger is declared without an initializer and
# set by a nonblocking assignment in an `initial` block instead: its update happens in the NBA
# region of time 0, after every `always @*` has started and is waiting on it, on any simulator,
# whatever the order in which it starts processes. Verilator and Yosys read it unchanged.
_TRIGGER = re.compile(r"^([ \t]*)reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+ ) = 0;$",
                      re.M)


def fix_time0(text):
    """Amaranth/Yosys Verilog ``text`` with the time-0 trigger of its ``always @*`` blocks made
    standard (see the comment above): ``reg t;`` + ``initial t <= 1'h0;``."""
    return _TRIGGER.sub(
        lambda m: (f"{m[1]}reg {m[2]};\n"
                   f"{m[1]}/* verilator lint_off INITIALDLY */\n"
                   f"{m[1]}initial {m[2]} <= 1'h0;  // runs every always @* at time 0\n"
                   f"{m[1]}/* verilator lint_on INITIALDLY */"), text)


class EmitPlatform:
    """The ``platform`` that :func:`verilog` passes to ``elaborate``.

    It collects the modules that :func:`place` asked to emit once; in the Amaranth simulator
    (``platform`` is ``None``) :func:`place` adds ordinary submodules instead.
    """

    def __init__(self, *, emit_src=False):
        self._modules = {}
        #: keep Amaranth's ``(* src = "file:line" *)`` attributes (coverage builds map Verilog
        #: lines back to the generator's source with them); off by default: absolute paths
        self.emit_src = emit_src

    @property
    def shared_modules(self):
        """Names of the modules emitted once and instantiated (after :meth:`convert`)."""
        return tuple(self._modules)

    def shared_module(self, name, component):
        """Register ``component`` to be emitted once as Verilog module ``name``; returns
        ``name``. Registering a component with another signature under a taken name is a bug."""
        known = self._modules.setdefault(name, component)
        if known is not component and known.signature != component.signature:
            raise ValueError(f"shared module {name!r} registered with two different signatures")
        return name

    def convert(self, component, name):
        """Verilog of ``component`` as module ``name``, followed by every shared module."""
        from amaranth.back import verilog as back
        texts = [fix_time0(back.convert(component, name=name, emit_src=self.emit_src,
                                           platform=self))]
        done = set()
        while len(done) < len(self._modules):
            for mod, sub in list(self._modules.items()):
                if mod not in done:
                    done.add(mod)
                    texts.append(fix_time0(back.convert(sub, name=mod, emit_src=self.emit_src,
                                                        platform=self)))
        return "\n".join(texts)


def port_name(path):
    """The Verilog port name Amaranth gives the member at ``path`` (``("i", "payload")`` ->
    ``i__payload``; array members contribute their index)."""
    return "__".join(str(p) for p in path)


def place(m, platform, name, make, *, module, clocked=True):
    """Add the component ``make()`` to ``m`` as submodule ``name`` and return an object with
    its members, to be driven and read (or ``wiring.connect``-ed) like the component itself.

    Under :class:`EmitPlatform` the first placement of ``module`` registers ``make()`` to be
    emitted once as Verilog module ``module``; every placement (the first included) becomes an
    ``Instance`` of it wired to a fresh interface of the component's signature, nested stream
    members included. ``clocked``: the module has the ``sync`` domain (``clk``/``rst`` ports).
    Elsewhere (the Amaranth simulator, formal harnesses) ``make()`` is an ordinary submodule.
    """
    share = getattr(platform, "shared_module", None)
    if share is None:
        comp = make()
        m.submodules[name] = comp
        return comp
    cache = platform.__dict__.setdefault("_prototypes", {})
    if module not in cache:
        cache[module] = make()
        share(module, cache[module])
    signature = cache[module].signature
    iface = signature.create(path=(name,))
    ports = {"i_clk": ClockSignal(), "i_rst": ResetSignal()} if clocked else {}
    for path, member, value in signature.flatten(iface):
        ports[("i_" if member.flow == wiring.In else "o_") + port_name(path)] = value
    m.submodules[name] = Instance(module, **ports)
    return iface


def verilog(component, name="top"):
    """Verilog text of ``component`` with top module ``name`` (no source paths in it)."""
    return EmitPlatform().convert(component, name)


def emit(component, path, name=None):
    """Write ``component``'s Verilog to ``path``; the top module is ``name`` or the file's stem.

    Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(verilog(component, name=name or path.stem))
    return path
