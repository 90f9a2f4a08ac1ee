"""Decode tok/s of the random ~1B Llama (same model as nybble.bench.e2e_cpu) with nybble's kernels on
each threading backend, alternating in one process (so both see the same machine state).

    python benchmarks/cpu/e2e-openmp/decode_backends.py a16|a8|int4 openmp,pool   (env: REPS, LAYERS)

Prints, per backend and repetition: decode tok/s over 32 steps (after 3 warm-up steps), median and
min step time. ``int4`` runs the torch_int4_cpu kernel (the backend setting does not apply to it).
"""
import sys, time, statistics, torch, os
os.environ.setdefault("NYBBLE_NO_PROGRESS", "1")
import nybble
from nybble.bench.e2e_cpu import build_model
from nybble.kernels import cpu
variant = sys.argv[1]; backends = sys.argv[2].split(",") if len(sys.argv) > 2 else ["auto"]
layers = int(os.environ.get("LAYERS", 16))
model = build_model(layers, 2048, 5632, 32, 8, 32000)
if variant == "a16":
    nybble.quantize(model, nybble.Int4WeightOnlyConfig(group_size=128, zero_point="int"), force_kernel="nybble_cpu", show_progress=False)
elif variant == "a8":
    nybble.quantize(model, nybble.Int8DynamicActivationInt4WeightConfig(group_size=128, zero_point="int", act_mapping="symmetric"), force_kernel="nybble_cpu", show_progress=False)
elif variant == "int4":
    nybble.quantize(model, nybble.Int4WeightOnlyConfig(group_size=128, zero_point="none"), force_kernel="torch_int4_cpu", show_progress=False)
gen = torch.Generator().manual_seed(1)
def run(steps=32):
    with torch.inference_mode():
        out = model(input_ids=torch.randint(0, 32000, (1, 16), generator=gen), use_cache=True, logits_to_keep=1)
        ts = []
        for _ in range(steps):
            tok = out.logits[:, -1:].argmax(-1)
            t = time.perf_counter()
            out = model(input_ids=tok, past_key_values=out.past_key_values, use_cache=True)
            ts.append(time.perf_counter() - t)
    return len(ts) / sum(ts), statistics.median(ts) * 1e3, min(ts) * 1e3
for rep in range(int(os.environ.get("REPS", 2))):
    for b in backends:
        cpu.set_threads_backend(b)
        run(3)
        tps, med, mn = run()
        print(f"{variant} backend={cpu.threads_backend():6s} decode {tps:6.2f} tok/s  median {med:6.2f} ms  min {mn:6.2f} ms", flush=True)
