"""Sixth session, ~15:14 (/tmp/s6/na3.py, kept as run): compiled torch int4 with sdpa vs with nybble's attention op
(static cache of 39 / 40 / 48 slots) vs eager with the op, one model, 8 rounds, block timing. Output (15:13,
exclusive lock): sdpa-39 52.8, na-39 60.6, na-40 59.0, na-48 62.4, eager-na 58.3 tok/s (medians; no probe)."""
import time, sys, torch, nybble, fcntl, statistics
from nybble.bench.e2e_cpu import Decoder, build_model
from nybble.kernels.cpu_attention import use_decode_attention
torch.set_num_threads(2)
lock = open("/tmp/nybble_bench.lock", "a+"); fcntl.flock(lock, fcntl.LOCK_SH)
m = build_model(16, 2048, 5632, 32, 8, 32000)
nybble.quantize(m, nybble.Int4WeightOnlyConfig(group_size=128, zero_point="none"), force_kernel="torch_int4_cpu", show_progress=False)
ds = {}
gen = torch.Generator().manual_seed(1)
with torch.inference_mode():
    for key in [("sdpa", 39), ("na", 39), ("na", 40), ("na", 48), ("eager-na", 0)]:
        if key[0] == "sdpa": m.set_attn_implementation("sdpa")
        else: use_decode_attention(m)
        d = Decoder(m, compile=key[0] != "eager-na", max_len=key[1] or 64); d.attention = "sdpa" if key[0] == "sdpa" else "nybble_cpu_decode"
        tok = d.start(torch.randint(0, 32000, (1, 16), generator=gen))
        for _ in range(3): tok = d.step(tok)
        ds[key] = d
fcntl.flock(lock, fcntl.LOCK_UN); fcntl.flock(lock, fcntl.LOCK_EX)
res = {k: [] for k in ds}
for r in range(8):
    for key, d in ds.items():
        m.set_attn_implementation(d.attention)
        with torch.inference_mode():
            tok = d.start(torch.randint(0, 32000, (1, 16), generator=gen))
            for _ in range(3): tok = d.step(tok)
            t = time.perf_counter()
            for _ in range(12): tok = d.step(tok)
            res[key].append(12 / (time.perf_counter() - t))
for k, v in res.items(): print(k, f"{statistics.median(v):.1f} tok/s", " ".join(f"{x:.1f}" for x in v))
