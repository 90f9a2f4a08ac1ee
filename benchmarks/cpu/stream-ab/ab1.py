import sys, time, statistics, ctypes, torch
from nybble.kernels import cpu_ops as O
nt = int(sys.argv[1]) if len(sys.argv) > 1 else 1
torch.set_num_threads(nt)
lib = ctypes.CDLL('/tmp/k3/mb.so'); lib.lin.restype = ctypes.c_int64; lib.tiled.restype = ctypes.c_int64
L3 = 32 << 20
g = torch.Generator().manual_seed(0)
def timeit(fn, reps, warm=2):
    for i in range(warm): fn(i)
    ts = []
    for i in range(reps):
        t0 = time.perf_counter(); fn(i); ts.append(time.perf_counter() - t0)
    return ts
for k, n in [(4096, 14336), (14336, 4096)]:
    nb, G = (n + 15) // 16, k // 128
    wb = n * k // 2 + nb * 16 * G * 3
    copies = int(4 * L3 / wb) + 2
    ws = [(torch.randint(0, 256, (nb, k // 8, 64), dtype=torch.uint8, generator=g),
           ((torch.rand(nb, G, 16, generator=g) + 0.5) / 64).bfloat16(),
           torch.randint(0, 16, (nb, G, 16), dtype=torch.int8, generator=g)) for _ in range(copies)]
    bufs = [torch.ones(wb // 4) for _ in range(copies)]
    xb = torch.randn(1, k).bfloat16()
    bb = k * 8
    modes = {
        'torch.sum': lambda i: bufs[i % copies].sum(),
        'lin': lambda i: lib.lin(ctypes.c_void_p(ws[i % copies][0].data_ptr()), ctypes.c_int64(nb * bb), ctypes.c_int64(0)),
        'lin_pf2k': lambda i: lib.lin(ctypes.c_void_p(ws[i % copies][0].data_ptr()), ctypes.c_int64(nb * bb), ctypes.c_int64(2048)),
        'tiled4': lambda i: lib.tiled(ctypes.c_void_p(ws[i % copies][0].data_ptr()), ctypes.c_int64(nb), ctypes.c_int64(bb), 4, ctypes.c_int64(0)),
        'tiled4_pf2k': lambda i: lib.tiled(ctypes.c_void_p(ws[i % copies][0].data_ptr()), ctypes.c_int64(nb), ctypes.c_int64(bb), 4, ctypes.c_int64(2048)),
        'tiled1_pf2k': lambda i: lib.tiled(ctypes.c_void_p(ws[i % copies][0].data_ptr()), ctypes.c_int64(nb), ctypes.c_int64(bb), 1, ctypes.c_int64(2048)),
        'a16bf16': lambda i: O.a16w4_impl(xb, ws[i % copies][0], ws[i % copies][1], ws[i % copies][2], n, 128, None, 'avx512_bf16'),
        'a8': lambda i: O.a8w4_impl(xb, ws[i % copies][0], ws[i % copies][1], ws[i % copies][2], None, n, 128, False, None, 'avx512_bf16'),
    }
    res = {m: [] for m in modes}
    for r in range(4):
        for m, f in (modes.items() if r % 2 == 0 else reversed(list(modes.items()))):
            res[m] += timeit(f, 12)
    nbytes_map = {'lin': nb * bb, 'lin_pf2k': nb * bb, 'tiled4': nb * bb, 'tiled4_pf2k': nb * bb, 'tiled1_pf2k': nb * bb}
    print(f"{k}x{n} threads={nt}: " + " | ".join(
        f"{m} {nbytes_map.get(m, wb) / statistics.median(v) / 1e9:.1f}" for m, v in res.items()), flush=True)
