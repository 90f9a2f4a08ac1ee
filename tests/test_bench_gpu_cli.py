"""``nybble bench gpu`` on a machine without CUDA: bad flags get their error, good ones a clear refusal
(the benchmark itself runs in ``tests/gpu/test_bench_gpu.py`` on the GPU machine)."""
import pytest
import torch

from nybble.cli import main


@pytest.mark.parametrize("flags,message", [
    (["--shapes", "4096"], "must look like KxN"),
    (["--shapes", "4096x0"], "must be positive"),
    (["--m", "1,x"], "integers"),
    (["--m", "0"], "positive"),
    (["--group-size", "48"], "use 32, 64, 128, 256 or -1"),
    (["--shapes", "4000x4096"], "not a multiple of --group-size 128"),
])
def test_bad_flags_are_named(flags, message, tmp_path, capsys):
    assert main(["bench", "gpu", "--out-dir", str(tmp_path), *flags]) == 1
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written


def test_no_cuda_is_a_clear_refusal(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["bench", "gpu", "--shapes", "256x512", "--m", "1", "--out-dir", str(tmp_path)]) == 1
    assert "no CUDA device" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
