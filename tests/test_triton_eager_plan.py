"""CPU tests of the Triton eager launch plans' bookkeeping (``kernels/triton/eager_plan.py``): what
a plan substitutes per call, what it keeps, when it refuses, and when it is invalidated.  The
launches are fakes that log their arguments (the real kernels need a GPU: ``tests/gpu``)."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from nybble.kernels.triton import eager_plan, launch  # noqa: E402


class _Run:
    global_scratch_size = 0
    profile_scratch_size = 0
    launch_cooperative_grid = False
    launch_pdl = False

    def __init__(self, log):
        self.log = log

    def launch(self, gx, gy, gz, stream, function, coop, pdl, gscratch, pscratch, meta, lmeta, enter, leave, *args):
        self.log.append(((gx, gy, gz), stream, args))


class _Compiled:
    def __init__(self, log):
        self.function = 7
        self.packed_metadata = (4, 1, 0)
        self.run = _Run(log)


class _Layer:
    """A fake two-launch layer: 'kernel 1' writes a scratch of ``scratch_bytes``, 'kernel 2' reads
    x, the weight, the scratch and writes the output; with ``compute`` it also runs a torch op."""

    def __init__(self, n=8, k=16, scratch_bytes=256, compute=False):
        self.log: list = []
        self.compiled = _Compiled(self.log)
        self.w = torch.randn(n, k)
        self.n, self.k, self.scratch_bytes, self.compute = n, k, scratch_bytes, compute
        self.calls = 0

    def __call__(self, x2):
        self.calls += 1
        m = x2.shape[0]
        out = x2.new_empty(m, self.n)
        ws = torch.empty(self.scratch_bytes // 4, dtype=torch.float32)
        if self.compute:
            out.copy_(x2 @ self.w.t())
        rec = launch._RECORD[0]
        for args in ((self.w, ws, m, 3), (x2, self.w, ws.view(torch.int32)[2:], out, m, self.n, True)):
            self.compiled.run.launch(1, 1, 1, 0, 7, False, False, None, None, None, None, None, None,
                                     *[a.data_ptr() if isinstance(a, torch.Tensor) else a for a in args])
            if rec is not None:
                rec.append(launch.Launch(self.compiled, (m, 2, 1), args, -1))
        return out


@pytest.fixture(autouse=True)
def _fake_stream(monkeypatch):
    monkeypatch.setattr(eager_plan, "_raw_stream", lambda dev: 1234)


def _plans(layer, bias=None):
    return eager_plan.EagerPlans(layer, (layer.w, bias), layer.n, layer.k, torch.float32)


def test_plan_substitutes_x_and_out_and_keeps_the_rest():
    layer = _Layer()
    plans = _plans(layer)
    x = torch.randn(1, 16)
    y = plans(x)
    assert y.shape == (1, 8) and layer.calls == 2  # warm-up + recorded call, then the plan ran
    plan = plans.plan_for((1, 16))
    assert plan is not None and plan.num_launches == 2 and plan.scratch == ()  # 256 B scratch: pooled
    kept = plan.keep[0].data_ptr()
    layer.log.clear()
    x2 = torch.randn(1, 16)
    y2 = plans(x2)
    assert layer.calls == 2  # the layer's Python path did not run again
    (g1, s1, a1), (g2, s2, a2) = layer.log
    assert g1 == g2 == (1, 2, 1) and s1 == s2 == 1234
    assert a1 == (layer.w.data_ptr(), kept, 1, 3)
    assert a2 == (x2.data_ptr(), layer.w.data_ptr(), kept + 8, y2.data_ptr(), 1, 8, True)


def test_scratch_pool_outlives_the_plans():
    """Plans rebuilt after an invalidation reuse the layer's pool buffers (a CUDA graph that captured
    the old plan keeps pointing at live memory); the pool never exceeds PERSIST_BYTES."""
    layer = _Layer()
    pool: list = []
    plans = eager_plan.EagerPlans(layer, (layer.w, None), layer.n, layer.k, torch.float32, pool)
    plans(torch.randn(1, 16))
    first = [b.data_ptr() for b in pool]
    assert len(first) == 1
    eager_plan.bump_epoch()
    assert not plans.matches((layer.w, None))
    again = eager_plan.EagerPlans(layer, (layer.w, None), layer.n, layer.k, torch.float32, pool)
    again(torch.randn(1, 16))
    again(torch.randn(4, 16))  # another shape of the same layer shares the buffer too
    assert [b.data_ptr() for b in pool] == first
    assert again.plan_for((4, 16)).keep[0] is pool[0]
    big = _Layer(scratch_bytes=eager_plan.PERSIST_BYTES)
    big_pool: list = [torch.empty(1024, dtype=torch.uint8)]
    eager_plan.EagerPlans(big, (big.w, None), big.n, big.k, torch.float32, big_pool)(torch.randn(1, 16))
    assert sum(b.numel() for b in big_pool) <= eager_plan.PERSIST_BYTES


def test_large_scratch_is_allocated_per_call_with_its_offsets():
    layer = _Layer(scratch_bytes=eager_plan.PERSIST_BYTES + 1024)
    plans = _plans(layer)
    plans(torch.randn(3, 16))
    plan = plans.plan_for((3, 16))
    assert plan.scratch == (eager_plan.PERSIST_BYTES + 1024,) and plan.keep == []
    layer.log.clear()
    x = torch.randn(3, 16)
    plans(x)
    (_, _, a1), (_, _, a2) = layer.log
    assert a2[0] == x.data_ptr() and a2[2] == a1[1] + 8  # same scratch in both launches, view offset kept


def test_shapes_get_their_own_plans_and_3d_output_shape():
    layer = _Layer()
    plans = _plans(layer)
    assert plans(torch.randn(2, 5, 16)).shape == (2, 5, 8)
    assert plans(torch.randn(1, 16)).shape == (1, 8)
    assert plans.plan_for((2, 5, 16)) is not None and plans.plan_for((1, 16)) is not None
    assert plans(torch.randn(2, 5, 16)).shape == (2, 5, 8) and layer.calls == 4


def test_inputs_a_plan_cannot_take_return_none():
    layer = _Layer()
    plans = _plans(layer)
    plans(torch.randn(1, 16))
    assert plans(torch.randn(1, 32)[:, ::2]) is None            # not contiguous
    assert plans(torch.randn(1, 16, dtype=torch.float64)) is None  # another dtype
    assert plans(torch.randn(1, 17)[:, 1:]) is None             # 4-byte offset: not 16-byte aligned
    assert plans(torch.randn(0, 16)) is None                    # nothing to launch


def test_a_launcher_that_computes_with_torch_gets_no_plan():
    layer = _Layer(compute=True)
    plans = _plans(layer)
    x = torch.randn(2, 16)
    y = plans(x)
    assert torch.allclose(y, x @ layer.w.t())  # the ordinary result is returned
    assert plans.plan_for((2, 16)) is None
    calls = layer.calls
    assert plans(x) is None and layer.calls == calls  # remembered: no second recording


def test_matches_follows_tensor_identity_and_epoch():
    layer = _Layer()
    bias = torch.randn(8)
    plans = _plans(layer, bias)
    assert plans.matches((layer.w, bias))
    assert not plans.matches((layer.w.clone(), bias))
    assert not plans.matches((layer.w, None))
    assert not plans.matches((layer.w, bias.clone()))
    eager_plan.bump_epoch()
    assert not plans.matches((layer.w, bias))


def test_too_many_shapes_start_over():
    layer = _Layer()
    plans = _plans(layer)
    for m in range(1, eager_plan.MAX_PLANS + 2):
        plans(torch.randn(m, 16))
    assert len(plans.plans) <= eager_plan.MAX_PLANS


def test_recording_is_not_reentrant_and_direct_launcher_refuses_scratch_kernels():
    with launch.recording():
        with pytest.raises(RuntimeError):
            with launch.recording():
                pass
    c = _Compiled([])
    assert launch.direct_launcher(c) is not None
    c.run.global_scratch_size = 64
    assert launch.direct_launcher(c) is None


class _GluonLayer(_Layer):
    """Like ``_Layer``, but its second kernel is launched outside ``FastLaunch`` (as the Gluon GEMMs
    are: ``launch.note_unplannable_launch``) and writes the output itself."""

    def __call__(self, x2):
        self.calls += 1
        out = x2.new_empty(x2.shape[0], self.n)
        rec = launch._RECORD[0]
        if rec is not None:  # the first kernel: a FastLaunch launch the plan could replay
            rec.append(launch.Launch(self.compiled, (1, 1, 1), (x2, 3), -1))
        launch.note_unplannable_launch((4, 2))
        out.copy_(x2 @ self.w.t())  # stands for the Gluon kernel's work (not seen by the op guard)
        return out


def test_a_launch_outside_fastlaunch_refuses_the_plan(monkeypatch):
    """A plan that recorded only the FastLaunch launches around a Gluon GEMM would replay the
    activation quantization alone (the output left unwritten): the noted launch makes it refuse, so
    the first call returns the ordinary result and later calls are sent to the ordinary path (None)."""
    layer = _GluonLayer()
    plans = _plans(layer)
    monkeypatch.setattr(eager_plan, "_OpGuard", lambda: _NoGuard())
    x = torch.randn(3, 16)
    y = plans(x)
    assert y is not None and torch.allclose(y, x @ layer.w.t())
    assert plans.plan_for((3, 16)) is None
    calls = layer.calls
    assert plans(x) is None and layer.calls == calls  # remembered as "no plan": no replay, no recording
    with launch.recording() as recs:
        launch.note_unplannable_launch((5,))
    assert len(recs) == 1 and recs[0].compiled is None and recs[0].grid == (5, 1, 1)
    launch.note_unplannable_launch((5,))  # outside a recording: nothing to note, no error


class _NoGuard:
    """An op guard that sees nothing (so only the launches decide)."""
    other: list = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _CaptureChoiceLayer(_Layer):
    """A layer whose configured kernel is kept for CUDA-graph capture: in eager mode its launcher
    notes that it took the (plannable) fallback, then launches like :class:`_Layer`."""

    def __call__(self, x2):
        launch.note_capture_only_choice()
        return super().__call__(x2)


def test_an_eager_fallback_plan_steps_aside_during_capture(monkeypatch):
    """A plan recorded while the launcher took an eager fallback (note_capture_only_choice) is used in
    eager calls but not during CUDA-graph capture (the ordinary path then runs and takes the kernel
    kept for capture); the marker is not a launch of the plan."""
    layer = _CaptureChoiceLayer()
    plans = _plans(layer)
    monkeypatch.setattr(eager_plan, "_OpGuard", lambda: _NoGuard())
    x = torch.randn(1, 16)
    plans(x)
    plan = plans.plan_for((1, 16))
    assert plan is not None and plan.eager_only and plan.num_launches == 2
    calls = layer.calls
    assert plans(x) is not None and layer.calls == calls  # eager: the plan runs
    plain = _plans(_Layer())
    plain(x)
    assert not plain.plan_for((1, 16)).eager_only
    monkeypatch.setattr(eager_plan, "_capturing", lambda: True)
    assert plans(x) is None  # capturing: the ordinary path
    assert plain(x) is not None  # other plans still run while capturing
    with launch.recording() as recs:
        launch.note_capture_only_choice()
    assert len(recs) == 1 and recs[0].compiled is launch.CAPTURE_ONLY
    launch.note_capture_only_choice()  # outside a recording: nothing to note, no error
