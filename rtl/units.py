"""The unit registry: every generator's record (:class:`attnforge.rtl.unit.Unit`) by name.

The records themselves live beside their classes (``UNIT`` / ``UNITS`` at the end of each unit
module); this module only lists them, so adding a unit is one line here.
"""

from . import (detector, lane, mac, progressive_quant, rmmu, softmax, sparse_softmax, topk, topk_bitonic,
               topk_quickselect)

__all__ = ["UNITS", "unit", "build"]

UNITS = {u.name: u for u in (
    *mac.UNITS,
    topk.UNIT,
    topk_quickselect.UNIT,
    topk_bitonic.UNIT,
    softmax.UNIT,
    detector.UNIT,
    rmmu.UNIT,
    progressive_quant.UNIT,
    sparse_softmax.UNIT,
    lane.UNIT,
)}


def unit(name):
    """The record of unit ``name``; an unknown name raises a one-line ``ValueError``."""
    if name not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(UNITS)}, not {name!r}")
    return UNITS[name]


def build(name, **params):
    """Instantiate a registered unit by name; bad parameters raise ``ValueError``."""
    return unit(name).build(**params)
