"""Amaranth generators. ``attnforge.rtl.emit(component, path)`` writes a component's Verilog.

Every unit lives in its own module (``attnforge.rtl.mac`` ...) with its record
(:class:`~attnforge.rtl.unit.Unit`: parameters and legal domains, testbench, synthesis and formal
options); :data:`UNITS` maps command-line names to the records. Row streams follow
:mod:`attnforge.rtl.streams`.
"""

from .emit import EmitPlatform, emit, place, verilog
from .unit import Unit
from .units import UNITS, build, unit

__all__ = ["UNITS", "EmitPlatform", "Unit", "build", "emit", "place", "unit", "verilog"]
