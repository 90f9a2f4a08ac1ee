"""The calibrated recipes as block processors for :func:`.calibration.run_blockwise`.

Each recipe is called with a context (one block, or the whole model for leftover linears), runs the
block over the calibration inputs with hooks to gather what it needs, and installs every linear of
the context as an ``Int4Linear`` (plain int4, the same layout RTN produces).

A8W4 (``act_mode`` a8_sym/a8_asym): GPTQ builds its Hessian from the per-token fake-quantized inputs
(what the int8 kernels multiply), and AWQ's scale and clipping searches evaluate their candidates on
fake-quantized ``x / s``; the float reference they compare against is the unquantized layer.
"""
from __future__ import annotations

import copy

import torch

from ..api import replace_module
from ..plain import PlainInt4Weight
from .architectures import fold_into_linear, fold_into_norm, match_pattern, scale_groups
from .block_tune import FakeQuantLinear, tune_block
from .awq import search_clip, search_clip_h, search_scale, search_scale_h
from .calibration import BlockContext, fake_quantize_activations
from .gptq import (CrossAccumulator, HessianAccumulator, asymmetric_target, bias_correction,
                   centered_moments, gptq_quantize, refit_group_scales, spectral_shrink)
from ..primitives import dequantize, quantize_rtn


def relative_output_error(w: torch.Tensor, q: torch.Tensor, h: torch.Tensor) -> float:
    """``||X (W - Q)^T||^2 / ||X W^T||^2`` from the input Hessian ``H = X^T X / M``; all ``(N, K)``
    / ``(K, K)`` fp32."""
    e = w - q
    num = float(((e @ h) * e).sum())
    den = float(((w @ h) * w).sum())
    return num / den if den > 0 else float("nan")


class _InputScaler:
    """Forward pre-hook dividing a linear's input by ``s`` (``(K,)``); linears of one group share one
    instance, which reuses the divided tensor for the same input (so shared inputs stay shared)."""

    def __init__(self, s: torch.Tensor):
        self.s = s
        self._last_in = self._last_out = None

    def __call__(self, mod, args):
        x = args[0]
        if x is not self._last_in:
            self._last_in, self._last_out = x, x / self.s.to(x.dtype)
        return (self._last_out,) + tuple(args[1:])

    def clear(self):
        self._last_in = self._last_out = None


class GPTQRecipe:
    """GPTQ over each block: one pass to accumulate Hessians (shared inputs share one), then every
    linear rounded with :func:`.gptq.gptq_quantize` and installed."""

    def __init__(self, config, opts: dict, install, summary):
        self.config, self.opts, self.install, self.summary = config, opts, install, summary
        self.errors: dict[str, dict] = {}
        #: asymmetric calibration: the engine keeps the float model's block inputs alongside
        self.float_stream = bool(opts.get("asymmetric", False))
        self._pending: dict | None = None

    def __call__(self, ctx) -> None:
        self.quantize(ctx, {})

    def quantize(self, ctx, input_scales: dict[str, torch.Tensor]) -> None:
        """GPTQ the linears of ``ctx``; ``input_scales[name]`` (AWQ, not folded) is passed on to the
        installed layer (the linear's input is already divided by it through a pre-hook)."""
        stages = [ctx.names]
        if self.opts["true_sequential"] and isinstance(ctx, BlockContext) and match_pattern(ctx.module):
            groups = scale_groups(ctx.module, ctx.prefix, ctx.names)
            stages = [g.names for g in groups]
        fblock = None
        if self.float_stream and isinstance(ctx, BlockContext) and ctx.has_float_stream:
            # the block as it is now (float, AWQ scales folded/applied): computes the float model's
            # function; the engine advances the float stream with it
            fblock = ctx.float_module = copy.deepcopy(ctx.module)
        # block-output tuning of the scales: the rounded layers stay differentiable stand-ins until the
        # whole block is rounded and tuned, then they are installed
        self._pending = {} if (fblock is not None and self.opts["block_tune"] > 0) else None
        for stage in stages:
            self._quantize_stage(ctx, stage, input_scales, fblock)
        if self._pending:
            self._tune_and_install(ctx, fblock, input_scales)
        self._pending = None

    def _tune_and_install(self, ctx, fblock, input_scales) -> None:
        o = self.opts
        fakes = {n: p[0] for n, p in self._pending.items()}
        with torch.no_grad():
            targets = ctx.float_outputs(fblock)
        info = tune_block(ctx.module, fakes, ctx.forward_batch, targets, ctx.masks, steps=o["block_tune"],
                          lr=o["block_tune_lr"], tune_bias=o["bias_correction"], tune_norms=o["block_tune_norms"])
        del targets
        self.summary.details.setdefault("block_tune", {})[ctx.prefix] = info
        for name, (fake, lin, zero, dtype, h) in self._pending.items():
            codes = (fake.u + (8.0 if zero is None else zero.float().repeat_interleave(fake.g, dim=1)))
            plain = PlainInt4Weight.from_codes(codes.round().to(torch.uint8), fake.scale().detach().to(dtype),
                                               zero, self.config.group_size)
            if fake.has_bias:
                lin.bias.data.copy_(fake.bias().detach().to(lin.bias.dtype))
            if h is not None:
                self._record_error(name, lin.weight.detach(), plain, h)
            self.install(name, plain, input_scale=input_scales.get(name))

    def _record_error(self, name, w, plain, h) -> None:
        wf = w.float()
        rtn = dequantize(*quantize_rtn(w, self.config.group_size, self.config.domain), self.config.group_size)
        self.errors[name] = {"rtn": relative_output_error(wf, rtn, h),
                             "gptq": relative_output_error(wf, plain.dequantize(torch.float32), h)}
        self.summary.details["layer_errors"] = self.errors

    def _quantize_stage(self, ctx, names: list[str], input_scales: dict[str, torch.Tensor], fblock=None) -> None:
        hess: dict[str, HessianAccumulator] = {}
        cross: dict[str, CrossAccumulator] = {}
        act = ctx.act_mode

        def add(name, x, xf=None):
            acc = hess.get(name)
            if acc is None:
                acc = hess[name] = HessianAccumulator(x.shape[-1], x.device)
            xq = fake_quantize_activations(x, act)
            acc.add(xq)
            if xf is not None:
                cacc = cross.get(name)
                if cacc is None:
                    cacc = cross[name] = CrossAccumulator(x.shape[-1], x.device)
                cacc.add(xq, xf)

        if fblock is not None:
            ctx.run_pair(fblock, names, add)
        else:
            with ctx.hook_inputs(names, add, dedupe=True):
                ctx.run(stop_after=names)
        owner = dict(ctx.input_owner)
        remaining = {}
        for n in names:
            remaining[owner.get(n, n)] = remaining.get(owner.get(n, n), 0) + 1
        o = self.opts
        shrunk: dict[tuple[str, bool], torch.Tensor] = {}
        for name in names:
            lin = ctx.linear(name)
            key = owner.get(name, name)
            if key not in hess:
                raise ValueError(f"{name}: received no calibration inputs (is it used in the forward pass?)")
            h = h_round = hess[key].hessian()
            c = cross[key].cross() if key in cross else None
            mu_q = hess[key].mean()
            mu_f = cross[key].mean_float() if key in cross else None
            w = lin.weight.detach()
            correct_bias = o["bias_correction"] and lin.bias is not None
            if correct_bias and o["bias_center"]:
                # the bias absorbs the mean output error: round for the centred outputs
                h_round, c = centered_moments(h, mu_q, c, mu_f)
            if o["hess_shrink"] > 0:
                # shrink the moments towards their diagonals (scale-invariant regularisation)
                lam = o["hess_shrink"]
                h_round = (1 - lam) * h_round + lam * torch.diag(torch.diagonal(h_round))
                if c is not None:
                    c = (1 - lam) * c + lam * torch.diag(torch.diagonal(c))
            target = w
            if c is not None:
                target = asymmetric_target(w, h_round, c, damp=o["asym_damp"], name=name)
            if o["hess_power"] != 1.0:
                # round with a spectrally shrunk Hessian (the target keeps the measured moments); one
                # eigendecomposition per shared input (q/k/v, gate/up)
                skey = (key, bool(correct_bias and o["bias_center"]))
                if skey not in shrunk:
                    shrunk[skey] = spectral_shrink(h_round, o["hess_power"])
                h_round = shrunk[skey]
            res = gptq_quantize(target, h_round, self.config.group_size, self.config.domain, damp=o["damp"],
                                block_size=o["block_size"], act_order=o["act_order"], scale_dtype=w.dtype,
                                name=name, clip_search=o["clip_search"], refit_scales=o["refit_scales"], clip_grid2d=o["clip_grid2d"],
                                clip_weight=o["clip_weight"], clip_grid=o["clip_grid"],
                                clip_max_shrink=o["clip_max_shrink"], refine_sweeps=o["refine_sweeps"])
            plain = PlainInt4Weight.from_codes(res.codes, res.scale, res.zero_point, self.config.group_size)
            if correct_bias:
                # b' = b + W mu_f - Q mu_q: zero mean output error on the calibration tokens (the
                # replaced nn.Linear's bias tensor is what the installer hands to the int4 layer)
                lin.bias.data.copy_(bias_correction(w, plain.dequantize(torch.float32), lin.bias.detach(), mu_q, mu_f))
            if self._pending is not None:
                fake = FakeQuantLinear(res.codes, res.scale, res.zero_point, self.config.group_size, lin.bias,
                                       input_scales.get(name), ctx.act_mode)
                self._pending[name] = (fake, lin, res.zero_point, w.dtype, h if o["layer_errors"] else None)
                replace_module(ctx.model, name, fake)
            else:
                if o["layer_errors"]:
                    self._record_error(name, w, plain, h)
                self.install(name, plain, input_scale=input_scales.get(name))
            remaining[key] -= 1
            if remaining[key] == 0:
                del hess[key]
                cross.pop(key, None)
                for skey in [sk for sk in shrunk if sk[0] == key]:
                    del shrunk[skey]


class _GroupStats:
    """Per-channel ``mean|x|`` over all calibration rows, and either the second moment
    ``X^T X / M`` (``keep_rows=False``, A16) or a random subsample of rows (A8W4), fp32."""

    def __init__(self, per_batch: int, seed: int, keep_rows: bool):
        self.sum_abs = None
        self.count = 0
        self.rows: list[torch.Tensor] = []
        self.hess: HessianAccumulator | None = None
        self.per_batch, self.keep_rows = per_batch, keep_rows
        self.gen = torch.Generator(device="cpu").manual_seed(seed)

    def add(self, x: torch.Tensor) -> None:
        xf = x.float()
        s = xf.abs().sum(dim=0)
        self.sum_abs = s if self.sum_abs is None else self.sum_abs + s
        self.count += xf.shape[0]
        if not self.keep_rows:
            if self.hess is None:
                self.hess = HessianAccumulator(xf.shape[-1], xf.device)
            self.hess.add(xf)
            return
        if xf.shape[0] > self.per_batch:
            idx = torch.randperm(xf.shape[0], generator=self.gen)[:self.per_batch].to(xf.device)
            xf = xf[idx]
        self.rows.append(xf.clone())

    def mean_abs(self) -> torch.Tensor:
        return self.sum_abs / max(1, self.count)

    def x(self) -> torch.Tensor:
        return torch.cat(self.rows)


class AWQRecipe:
    """AWQ over each block: gather input statistics, search and fold (or keep) per-group scales,
    then clip and round each linear (``awq``) or hand over to GPTQ (``awq+gptq``).

    ``fold_only=True`` (for tests): stop after applying the scales, leaving the float model with the
    scales folded or applied by input pre-hooks (it must compute the same function as before)."""

    def __init__(self, config, opts: dict, install, summary, then_gptq: bool = False, fold_only: bool = False):
        self.config, self.opts, self.install, self.summary = config, opts, install, summary
        self.then_gptq, self.fold_only = then_gptq, fold_only
        self.gptq = GPTQRecipe(config, opts, install, summary) if then_gptq else None
        # asymmetric calibration: awq+gptq leaves it to GPTQ (after the scales); awq alone searches
        # scales and clipping for the asymmetric target W' (see .gptq.asymmetric_target)
        self.float_stream = bool(opts.get("asymmetric", False)) and not fold_only
        self.report = {"folded_groups": 0, "input_scaled_layers": 0, "unchanged_groups": 0}

    def __call__(self, ctx) -> None:
        cfg, o, act = self.config, self.opts, ctx.act_mode
        block = ctx.module if isinstance(ctx, BlockContext) else None
        groups = scale_groups(block, ctx.prefix, ctx.names)
        per_batch = -(-o["awq_tokens"] // max(1, ctx.num_batches))
        rows = act.is_a8  # A8W4 needs real rows (nonlinear activation quantization); A16 uses X^T X
        stats = {g.names[0]: _GroupStats(per_batch, seed=i, keep_rows=rows) for i, g in enumerate(groups)}
        with ctx.hook_inputs(list(stats), lambda n, x: stats[n].add(x)):
            ctx.run()

        input_scales: dict[str, torch.Tensor] = {}
        scalers: dict[str, tuple[_InputScaler, object]] = {}
        layer_x: dict[str, torch.Tensor] = {}
        for grp in groups:
            st = stats.pop(grp.names[0])
            if st.count == 0:
                raise ValueError(f"{grp.names[0]}: received no calibration inputs (is it used in the forward pass?)")
            lins = [ctx.linear(n) for n in grp.names]
            sd = lins[0].weight.dtype
            if rows:
                x = st.x()
                s, alpha, _ = search_scale(x, st.mean_abs(), [m.weight for m in lins], cfg.group_size,
                                           cfg.domain, act, grid=o["awq_grid"], scale_dtype=sd)
            else:
                x = st.hess.hessian()
                s, alpha, _ = search_scale_h(x, st.mean_abs(), [m.weight for m in lins], cfg.group_size,
                                             cfg.domain, grid=o["awq_grid"], scale_dtype=sd)
            if alpha == 0:
                self.report["unchanged_groups"] += 1
            else:
                for m in lins:
                    m.weight.data.mul_(s.to(m.weight.dtype))
                folded = False
                if grp.prev_kind == "norm":
                    folded = fold_into_norm(grp.prev, s)
                elif grp.prev_kind == "linear":
                    fold_into_linear(grp.prev, s)
                    folded = True
                if folded:
                    self.report["folded_groups"] += 1
                else:
                    scaler = _InputScaler(s)
                    for n, m in zip(grp.names, lins):
                        input_scales[n] = s
                        scalers[n] = (scaler, m.register_forward_pre_hook(scaler))
                    self.report["input_scaled_layers"] += len(lins)
                x = x / s if rows else x / (s[:, None] * s[None, :])
            for n in grp.names:
                layer_x[n] = x
        self.summary.details["awq"] = dict(self.report)
        if self.fold_only:
            return
        try:
            if self.then_gptq:
                self.gptq.quantize(ctx, input_scales)
                return
            if self.float_stream and isinstance(ctx, BlockContext) and ctx.has_float_stream:
                self._round_asymmetric(ctx, groups, input_scales, layer_x)
                return
            for name in ctx.names:
                w = ctx.linear(name).weight.detach()
                if o["awq_clip"] and o["awq_clip_grid"] > 0 and act.is_a8:
                    xs = layer_x[name][:o["awq_clip_tokens"]]
                    w = search_clip(xs, w, cfg.group_size, cfg.domain, act, grid=o["awq_clip_grid"],
                                    max_shrink=o["awq_max_shrink"], scale_dtype=w.dtype)
                elif o["awq_clip"] and o["awq_clip_grid"] > 0:
                    w = search_clip_h(layer_x[name], w, cfg.group_size, cfg.domain, grid=o["awq_clip_grid"],
                                      max_shrink=o["awq_max_shrink"], scale_dtype=w.dtype)
                plain = PlainInt4Weight.from_float(w, cfg.group_size, cfg.domain, ctx.linear(name).weight.dtype)
                self.install(name, plain, input_scale=input_scales.get(name))
        finally:
            for scaler, handle in scalers.values():
                handle.remove()
                scaler.clear()

    def _round_asymmetric(self, ctx, groups, input_scales, layer_x) -> None:
        """Clip and round the (scaled) linears group by group, each for the asymmetric target
        (:func:`.gptq.asymmetric_target`) on inputs gathered with the earlier groups already
        quantized (so a layer corrects only the error its inputs still carry)."""
        cfg, o, act = self.config, self.opts, ctx.act_mode
        # the block with the scales folded / applied (float): the float stream's function
        fblock = ctx.float_module = copy.deepcopy(ctx.module)
        clip = o["awq_clip"] and o["awq_clip_grid"] > 0
        for grp in groups:
            hq: dict[str, HessianAccumulator] = {}
            cq: dict[str, CrossAccumulator] = {}

            def add(n, x, xf):
                if n not in hq:
                    hq[n], cq[n] = HessianAccumulator(x.shape[-1], x.device), CrossAccumulator(x.shape[-1], x.device)
                xq = fake_quantize_activations(x, act)
                hq[n].add(xq)
                cq[n].add(xq, xf)

            ctx.run_pair(fblock, grp.names, add, dedupe=True)
            for name in grp.names:
                key = ctx.input_owner.get(name, name)
                lin = ctx.linear(name)
                h = hq[key].hessian()
                w = target = asymmetric_target(lin.weight.detach(), h, cq[key].cross(), damp=o["asym_damp"],
                                               name=name)
                if clip and act.is_a8:
                    w = search_clip(layer_x[name][:o["awq_clip_tokens"]], target, cfg.group_size, cfg.domain, act,
                                    grid=o["awq_clip_grid"], max_shrink=o["awq_max_shrink"],
                                    scale_dtype=lin.weight.dtype)
                elif clip:
                    w = search_clip_h(h, target, cfg.group_size, cfg.domain, grid=o["awq_clip_grid"],
                                      max_shrink=o["awq_max_shrink"], scale_dtype=lin.weight.dtype)
                codes, scale, zero = quantize_rtn(w, cfg.group_size, cfg.domain, lin.weight.dtype)
                if o["refit_scales"]:
                    scale = refit_group_scales(target, h, codes, scale, zero, cfg.group_size, damp=o["asym_damp"])
                plain = PlainInt4Weight.from_codes(codes, scale, zero, cfg.group_size)
                self.install(name, plain, input_scale=input_scales.get(name))


def make_recipe(config, opts: dict, install, summary) -> object:
    """The block processor for ``config.algorithm``."""
    if config.algorithm == "gptq":
        return GPTQRecipe(config, opts, install, summary)
    if config.algorithm == "awq":
        return AWQRecipe(config, opts, install, summary)
    if config.algorithm == "awq+gptq":
        return AWQRecipe(config, opts, install, summary, then_gptq=True)
    raise ValueError(f"algorithm {config.algorithm!r} has no calibrated recipe")


__all__ = ["GPTQRecipe", "AWQRecipe", "make_recipe", "relative_output_error"]
