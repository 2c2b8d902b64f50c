"""attnforge: parameterized, verified RTL for dynamic-sparse-attention accelerators.

Sub-packages: :mod:`attnforge.rtl` (Amaranth generators), :mod:`attnforge.golden` (bit-exact
NumPy models), :mod:`attnforge.testbench` (cocotb testbenches and their kit),
:mod:`attnforge.synth` (Yosys/nextpnr reports).
"""

__version__ = "0.1.0"
