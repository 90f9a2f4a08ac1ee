"""Show what an int4 checkpoint holds and which kernel would run each layer here (no DIR: this machine).

Examples::

    nybble info out_dir          # layers, group size, domain, activation mode, bytes, kernels
    nybble info                  # this machine: devices, CPU ISA path, kernels and why some refuse

Only config.json and the safetensors headers are read, so this is instant even for large models.
"""
from __future__ import annotations

import os
import platform
from collections import Counter

import torch


def add_arguments(parser):
    parser.add_argument("dir", nargs="?", default=None, help="checkpoint directory (omit for a machine overview)")
    parser.add_argument("--device", default="cpu", help="device type to choose kernels for (default cpu)")
    parser.add_argument("--layers", action="store_true", help="list every layer, not one line per shape")


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def cpu_isa_line() -> str:
    """``CPU ISA path: avx512_vnni (available: ...)`` or why the C++ kernels are unavailable."""
    try:
        from ..kernels.cpu import available_isas, selected_isa
    except Exception as exc:  # the C++ kernel module may be missing
        return f"CPU ISA path: unavailable ({type(exc).__name__}: {exc})"
    try:
        isa = selected_isa()
    except Exception as exc:
        return f"CPU ISA path: unavailable ({exc})"
    forced = os.environ.get("NYBBLE_CPU_ISA")
    how = f"forced by NYBBLE_CPU_ISA={forced}" if forced else "auto (highest this CPU runs)"
    line = f"CPU ISA path: {isa} [{how}]; available: {', '.join(available_isas())}"
    try:  # where the kernels' threads run: torch's OpenMP runtime or nybble's own pool
        from ..kernels.cpu import threads_info
        t = threads_info()
        lib = os.path.basename(t["omp_library"]) if t["backend"] == "openmp" else "nybble pool"
        line += f"; threads: {t['backend']} ({lib})" + (f" [{t['note']}]" if t["note"] else "")
    except Exception:  # an older extension without the threads entry points
        pass
    try:  # the cross-op weight prefetch (csrc/prefetch.h)
        from ..kernels.cpu import prefetch_state
        line += f"; cross-op prefetch: {prefetch_state()}"
    except Exception:  # an older extension without it
        pass
    return line


def shim_line() -> str:
    """``C++ op shim: <state>`` (:mod:`nybble.kernels.cpu_shim`): installed (loaded from the cache or built),
    not built yet, disabled (``NYBBLE_CPU_SHIM=0``) or unavailable (why)."""
    try:
        from ..kernels import cpu_ops  # noqa: F401  (defining the ops loads a cached shim, as any use would)
        from ..kernels import cpu_shim
        return "C++ op shim: " + cpu_shim.describe()
    except Exception as exc:  # the C++ kernel module may be missing
        return f"C++ op shim: unavailable ({type(exc).__name__}: {exc})"


def gpu_eager_line() -> str:
    """``GPU eager launches: <state>`` (:mod:`nybble.kernels.triton.plan_runner`): the C replay of the Triton
    kernels' eager plans -- on (built, or built now as the first eager GPU call would), off
    (``NYBBLE_TRITON_PLAN_RUNNER=0``) or unavailable (why: Triton's launchers are used)."""
    try:
        from ..kernels.triton import plan_runner
    except Exception as exc:  # no triton
        return f"GPU eager launches: Triton unavailable ({type(exc).__name__}: {exc})"
    if not plan_runner.enabled():
        return "GPU eager launches: Triton's launchers (NYBBLE_TRITON_PLAN_RUNNER=0)"
    if plan_runner.module() is None:
        return f"GPU eager launches: Triton's launchers (C plan runner unavailable: {plan_runner.status()['error']})"
    return "GPU eager launches: C plan runner (plan_runner.c)"


def machine_lines() -> list[str]:
    from ..kernels import registry
    from .. import __version__
    lines = [f"nybble {__version__}, torch {torch.__version__}, python {platform.python_version()}",
             f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"torch threads {torch.get_num_threads()}"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(f"GPU {i}: {p.name}, {p.total_memory / 2**30:.1f} GiB, capability {p.major}.{p.minor}")
    else:
        lines.append("GPU: none (CUDA not available)")
    lines.append(cpu_isa_line())
    lines.append(shim_line())
    if torch.cuda.is_available():
        lines.append(gpu_eager_line())
    off = registry.disabled_kernels()
    if off:
        lines.append(f"NYBBLE_DISABLED_KERNELS: {', '.join(sorted(off))}")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        lines.append(f"kernels for {dev} (priority order):")
        for name, cls, err in registry.candidates(dev):
            if cls is None:
                lines.append(f"  - {name}: {err}")
                continue
            ok, why = cls.is_supported(dev)
            state = "disabled" if name in off else ("available" if ok else f"unsupported: {why}")
            lines.append(f"  - {name}: {state}")
    return lines


def kernel_lines(spec) -> tuple[str, list[str]]:
    """The chosen kernel's name for ``spec`` and one line per kernel that refuses it."""
    from ..kernels import registry
    verdicts = registry.explain(spec)
    chosen = next((v.name for v in verdicts if v.ok), None)
    refusals = []
    for v in verdicts:
        if v.name == chosen:
            break
        refusals.append(f"{v.name}: {v.reason}")
    return chosen or "NONE", refusals


def checkpoint_lines(directory: str, device_type: str, every_layer: bool) -> list[str]:
    from ..formats.inspect import describe
    from ..kernels.base import LinearSpec
    from ..types import ZeroPointDomain, parse_dtype

    d = describe(directory)
    dtype = parse_dtype(d.dtype)
    q_bytes = sum(lay.nbytes for lay in d.layers)
    lines = [f"checkpoint: {d.directory}",
             f"  model: {d.architecture} (model_type {d.model_type}), dtype {d.dtype}",
             f"  format: {d.quant_method}" + "".join(f", {k} {v}" for k, v in d.extra.items() if v is not None),
             f"  int4 layers: {len(d.layers)} ({_mib(q_bytes)}); other tensors: {d.dense_tensors} "
             f"({_mib(d.dense_bytes)}); files: {d.files} ({_mib(d.file_bytes)})"]
    groups = Counter()
    for lay in d.layers:
        key = (lay.n, lay.k, lay.group_size, lay.symmetric, lay.act_mode, lay.act_order)
        groups[key] += 1
    lines.append(f"  kernels on {device_type} (this machine):")
    items = [((lay.n, lay.k, lay.group_size, lay.symmetric, lay.act_mode, lay.act_order), lay.name, 1)
             for lay in d.layers] if every_layer else [(k, None, c) for k, c in groups.items()]
    for (n, k, gs, sym, act, order), name, count in items:
        domain = ZeroPointDomain.NONE if sym else ZeroPointDomain.INT
        spec = LinearSpec(n, k, gs, domain, act, dtype, device_type, name or f"{count} layer(s)")
        chosen, refusals = kernel_lines(spec)
        gtxt = "per-channel" if gs == -1 else f"group {gs}"
        who = name or f"x{count}"
        lines.append(f"    {who}: N={n} K={k} {gtxt} zero_point={domain.value} act={act.value}"
                     f"{' act-order (inputs permuted)' if order else ''} -> {chosen}")
        lines.extend(f"        refused by {r}" for r in refusals)
    if device_type == "cpu":
        lines.append("  " + cpu_isa_line())
    return lines


def run(args) -> int:
    lines = machine_lines() if args.dir is None else checkpoint_lines(args.dir, args.device, args.layers)
    print("\n".join(lines))
    return 0
