"""Amaranth generators. ``attnforge.rtl.emit(component, path)`` writes a component's Verilog.

Every unit lives in its own module (``attnforge.rtl.mac`` ...) and is registered in
:data:`UNITS` under its command-line name, with the generator parameters the CLI exposes.
"""

from .emit import UNITS, EmitPlatform, Unit, build, emit, verilog

__all__ = ["UNITS", "EmitPlatform", "Unit", "build", "emit", "verilog"]
