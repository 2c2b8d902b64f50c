"""The command line and the Python emission API."""

import subprocess
import sys

import pytest

from attnforge.cli import main
from attnforge.rtl import UNITS, build, emit


def test_emit_api(tmp_path):
    path = emit(build("mac", frac_bits=8), tmp_path / "mac.v")
    text = path.read_text()
    assert "module mac(" in text
    assert str(tmp_path) not in text and "/work" not in text and ".py:" not in text


def test_cli_verilog(tmp_path, capsys):
    out = tmp_path / "m.v"
    assert main(["verilog", "mac", "--frac-bits", "8", "--max-depth", "16", "-o", str(out)]) == 0
    assert "module m(" in out.read_text()


@pytest.mark.parametrize("argv, message", [
    (["verilog", "mac", "--frac-bits", "16"], "frac_bits must be an integer in [0, 15], not 16"),
    (["verilog", "mac", "--max-depth", "0"], "max_depth must be an integer in"),
    (["lint", "nosuchunit"], "unit must be one of"),
])
def test_cli_bad_parameter_is_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("attnforge: error: ") and message in err and err.count("\n") == 1


def test_cli_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "attnforge", "verilog", "mac",
                           "--frac-bits", "99"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == \
        "attnforge: error: frac_bits must be an integer in [0, 15], not 99"


def test_units_listed(capsys):
    assert main(["units"]) == 0
    out = capsys.readouterr().out
    for name in UNITS:
        assert name in out
