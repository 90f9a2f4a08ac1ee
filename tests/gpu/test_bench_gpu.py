"""``nybble bench gpu`` end to end on a small shape (GPU machine): every method timed at every M, the
speedups computed from the same run's times, the CSV / markdown / meta / PNG written, and the
``--tune-table`` output a valid table of the configs the run used."""
import csv
import importlib.util
import json
import math
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

METHODS = {"triton_a16w4", "triton_a8w4", "tinygemm", "cublas_bf16", "read_floor", "read_once"}


def test_bench_gpu_small_run_writes_consistent_results(tmp_path):
    from nybble.kernels.triton.configs import ConfigStore, gpu_slug, make_key
    out = tmp_path / "bench"
    table = tmp_path / f"{gpu_slug(torch.cuda.get_device_name(0))}.json"  # where a ConfigStore looks for it
    ms = (1, 16, 300)
    cmd = [sys.executable, "-m", "nybble", "bench", "gpu", "--shapes", "2048x1024", "--m", ",".join(map(str, ms)),
           "--reps", "5", "--out-dir", str(out), "--tune-table", str(table)]
    if importlib.util.find_spec("matplotlib") is None:
        cmd.append("--no-plot")
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {(int(r["K"]), int(r["N"]), int(r["M"]), r["method"]) for r in rows} == {
        (2048, 1024, m, meth) for m in ms for meth in METHODS}
    for m in ms:
        rr = {r["method"]: r for r in rows if int(r["M"]) == m}
        cublas = float(rr["cublas_bf16"]["median_us"])
        for meth, r in rr.items():
            us = float(r["median_us"])
            assert math.isfinite(us) and us > 0, (m, meth, us)
            assert float(r["speedup_vs_cublas_bf16"]) == pytest.approx(cublas / us, rel=2e-2, abs=2e-3)
            assert float(r["speedup_vs_tinygemm"]) == pytest.approx(float(rr["tinygemm"]["median_us"]) / us,
                                                                     rel=2e-2, abs=2e-3)
        for meth in ("triton_a16w4", "triton_a8w4"):  # the config each triton cell ran with
            assert len(rr[meth]["config"].split("x")) == 6
    md = (out / "results.md").read_text()
    assert "## K=2048 N=1024" in md and all(f"\n| {m} | " in md for m in ms)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["gpu"] == torch.cuda.get_device_name(0) and meta["bandwidth"]["read_gbps"] > 100
    for path in ("triton_a16_apply", "triton_a8_sym_apply", "triton_a8_asym_apply", "cublas_bf16_F.linear"):
        assert 0 < meta["eager_us"][path] < 10_000, path
    if "--no-plot" not in cmd:
        assert (out / "speedup.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tuned = ConfigStore(torch.cuda.get_device_name(0), table_dir=tmp_path, cache=tmp_path / "no_cache")
    for m, r in ((m, r) for m in ms for r in rows if int(r["M"]) == m and r["method"].startswith("triton")):
        key = make_key("a16w4" if r["method"] == "triton_a16w4" else "a8w4", 1024, 2048, 128, m)
        assert tuned.source(key) == "table" and "x".join(map(str, tuned.get(key).to_json())) == r["config"]
