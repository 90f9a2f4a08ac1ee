"""The C replay of eager launch plans (``kernels/triton/plan_runner.py`` + ``plan_runner.c``) on the CPU:
the parameter layout it builds from a Triton signature, the per-call address patches, its refusals and
errors.  (The launches themselves are checked against Triton's launchers on the GPU machine:
``tests/gpu/test_triton_eager.py::test_c_plan_runner_replays_the_plans_bit_for_bit``.)"""
from __future__ import annotations

import struct
from types import SimpleNamespace

import pytest

pytest.importorskip("triton")

from nybble.kernels.triton import plan_runner  # noqa: E402


@pytest.fixture(scope="module")
def mod():
    m = plan_runner.module()
    if m is None:
        pytest.fail(f"the plan runner did not build: {plan_runner.status()}")
    return m


def _words(b: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(b) // 8}Q", b))


def test_parameter_layout_follows_the_signature(mod):
    sig = ["*bf16", "*i32", "i32", "constexpr", "i64", "*fp32", "fp32", "constexpr", "i1", "u8", "*i8"]
    args = [(0, 16), 0x1000, -7, 128, -5, (1, 0), 1.5, True, 1, 200, None]
    blob, offsets, patches = plan_runner.pack_params(sig, args)
    # 9 parameters (constexprs skipped) + the global and profile scratch pointers, 8 bytes apart
    assert offsets == tuple(range(0, 8 * 11, 8))
    assert patches == ((0, 0, 16), (32, 1, 0))
    plan = mod.Plan([(1, 3, 2, 1, 128, 0, 0, 0, blob, offsets, patches)])
    assert plan.num_launches == 1
    (d,) = plan.describe(0xAAAA0000, 0xBBBB0000)
    w = _words(d)
    assert w[0] == 0xAAAA0010 and w[1] == 0x1000 and w[4] == 0xBBBB0000 and w[9] == 0 and w[10] == 0
    assert struct.unpack("<i", d[16:20])[0] == -7
    assert struct.unpack("<q", d[24:32])[0] == -5
    assert struct.unpack("<f", d[40:44])[0] == 1.5
    assert d[48] == 1 and d[56] == 200 and w[8] == 0
    # patches are rewritten per call
    (d2,) = plan.describe(0x10, 0x20)
    assert _words(d2)[0] == 0x20 and _words(d2)[4] == 0x20


def test_two_launches_share_the_slots(mod):
    a = plan_runner.pack_params(["*fp32", "*bf16", "i32"], [(0, 0), (2, 64), 3])
    b = plan_runner.pack_params(["*bf16", "*fp32"], [(1, 8), (2, 0)])
    plan = mod.Plan([(1, 1, 1, 1, 32, 0, 0, 0, *a), (2, 4, 1, 1, 64, 1024, 1, 0, *b)])
    d1, d2 = plan.describe(100, 200, 300)
    assert _words(d1)[:2] == [100, 364] and _words(d2)[:2] == [208, 300]
    with pytest.raises(TypeError, match="needs 3 slot addresses, got 2"):
        plan.describe(100, 200)


def test_unhandled_parameters_are_refused():
    assert plan_runner.pack_params(["*bf16", "bf16"], [0, 1.0]) is None       # 16-bit float scalar
    assert plan_runner.pack_params(["nvTmaDesc"], [object()]) is None          # TMA descriptors (Gluon)
    assert plan_runner.pack_params(["*bf16"], [object()]) is None              # a pointer that is not an address
    assert plan_runner.pack_params(["i32"], [2 ** 40]) is None                 # out of the parameter's range
    assert plan_runner.pack_params(["i32", "i32"], [1]) is None                # lengths differ
    assert plan_runner.pack_params([("i32", "i32")], [(1, 2)]) is None         # nested (tuple) parameters


def test_launch_tuple_reads_the_compiled_kernel_and_refuses_what_it_cannot_replay():
    md = SimpleNamespace(num_warps=4, shared=2048, num_ctas=1)
    run = SimpleNamespace(global_scratch_size=0, profile_scratch_size=0, launch_pdl=True, launch_cooperative_grid=False)
    src = SimpleNamespace(signature={"x": "*bf16", "n": "i32", "B": "constexpr"})
    ck = SimpleNamespace(metadata=md, run=run, src=src, function=0xF00)
    t = plan_runner.launch_tuple(ck, (7, 2), [(0, 0), 9, 64])
    assert t[:8] == (0xF00, 7, 2, 1, 128, 2048, 1, 0)
    assert t[10] == ((0, 0, 0),)
    for bad in (SimpleNamespace(**{**vars(ck), "metadata": SimpleNamespace(num_warps=4, shared=0, num_ctas=2)}),
                SimpleNamespace(**{**vars(ck), "run": SimpleNamespace(**{**vars(run), "global_scratch_size": 64})}),
                SimpleNamespace(**{**vars(ck), "function": None})):
        assert plan_runner.launch_tuple(bad, (1,), [(0, 0), 9, 64]) is None


def test_bad_plans_raise_clear_errors(mod):
    blob, offs, patches = plan_runner.pack_params(["*bf16"], [(0, 0)])
    with pytest.raises(TypeError, match="tuple of 11"):
        mod.Plan([(1, 2, 3)])
    with pytest.raises(ValueError, match="block_x"):
        mod.Plan([(1, 1, 1, 1, 4096, 0, 0, 0, blob, offs, patches)])
    with pytest.raises(ValueError, match="parameter offset"):
        mod.Plan([(1, 1, 1, 1, 32, 0, 0, 0, blob, (999,), patches)])
    with pytest.raises(ValueError, match="patch offset"):
        mod.Plan([(1, 1, 1, 1, 32, 0, 0, 0, blob, offs, ((9999, 0, 0),))])


def test_run_without_a_driver_raises_instead_of_crashing(mod):
    import ctypes.util
    if ctypes.util.find_library("cuda"):
        pytest.skip("a CUDA driver is installed here: the launch itself is tested on the GPU machine")
    blob, offs, patches = plan_runner.pack_params(["*bf16"], [(0, 0)])
    plan = mod.Plan([(1, 1, 1, 1, 32, 0, 0, 0, blob, offs, patches)])
    with pytest.raises(RuntimeError, match="libcuda"):
        plan.run(0, 0x1000)


def test_env_switch_turns_the_c_replay_off(monkeypatch):
    md = SimpleNamespace(num_warps=4, shared=0, num_ctas=1)
    run = SimpleNamespace(global_scratch_size=0, profile_scratch_size=0, launch_pdl=False, launch_cooperative_grid=False)
    ck = SimpleNamespace(metadata=md, run=run, src=SimpleNamespace(signature={"x": "*bf16"}), function=1)
    assert plan_runner.native_plan([(ck, (1,), [(0, 0)])]) is not None
    monkeypatch.setenv("NYBBLE_TRITON_PLAN_RUNNER", "0")
    assert plan_runner.native_plan([(ck, (1,), [(0, 0)])]) is None
    assert plan_runner.status()["enabled"] is False


def test_info_line_says_which_launcher_runs_eager_gpu_calls(monkeypatch):
    from nybble.commands import info
    assert info.gpu_eager_line() == "GPU eager launches: C plan runner (plan_runner.c)"
    monkeypatch.setenv("NYBBLE_TRITON_PLAN_RUNNER", "0")
    assert "NYBBLE_TRITON_PLAN_RUNNER=0" in info.gpu_eager_line()
    monkeypatch.delenv("NYBBLE_TRITON_PLAN_RUNNER")
    monkeypatch.setitem(plan_runner._STATE, "module", None)
    monkeypatch.setitem(plan_runner._STATE, "error", "RuntimeError: no C compiler")
    assert "unavailable: RuntimeError: no C compiler" in info.gpu_eager_line()
