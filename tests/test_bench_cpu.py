"""Smoke tests of the CPU benchmark harness (tiny shapes, reference kernel) and its helpers."""
from __future__ import annotations

import csv

import pytest
import torch

from nybble.bench import common as C


def test_time_calls_budget_and_rotation_index():
    ticks = iter(range(0, 10_000))
    seen = []
    # fake clock: every call to clock() advances 1 s, so each fn call "takes" 1 s
    t = C.time_calls(lambda i: seen.append(i), budget_s=5, min_reps=2, max_reps=10, warmup=2,
                     clock=lambda: float(next(ticks)))
    assert t.n == 5 and t.median_us == pytest.approx(1e6)
    assert seen == list(range(7))  # warm-up indices 0, 1 then timed 2..6
    t = C.time_calls(lambda i: None, budget_s=0.0, min_reps=3, max_reps=10, clock=lambda: float(next(ticks)))
    assert t.n == 3
    with pytest.raises(ValueError):
        C.time_calls(lambda i: None, min_reps=5, max_reps=2)
    with pytest.raises(ValueError, match="estimate_s"):
        C.time_calls(lambda i: None, warmup=0)


def test_time_calls_continues_a_cell_without_warmup():
    ticks = iter(range(0, 10_000))
    seen = []
    first = C.time_calls(lambda i: seen.append(i), budget_s=2, min_reps=1, max_reps=10,
                         clock=lambda: float(next(ticks)))
    assert first.n == 2 and first.next_index == 3 and first.estimate_s == 1.0
    more = C.time_calls(lambda i: seen.append(i), budget_s=3, min_reps=1, max_reps=10, warmup=0,
                        start=first.next_index, estimate_s=first.estimate_s, clock=lambda: float(next(ticks)))
    assert more.n == 3 and seen == [0, 1, 2, 3, 4, 5]
    assert first.extend(more).n == 5 and first.next_index == 6


def test_copies_and_units():
    assert C.copies_for(8 << 20, 32 << 20, 4.0) == 17          # 17 x 8 MiB > 128 MiB
    assert C.copies_for(300 << 20, 32 << 20, 4.0) == 2         # at least two copies
    assert C.gbps(1e9, 1e6) == pytest.approx(1.0)
    assert C.gflops(1, 1000, 1000, 1.0) == pytest.approx(2000.0)
    assert C.cpu_cache_bytes() >= 1 << 20
    assert C._parse_size("32768K") == 32 << 20 and C._parse_size("32 MiB") == 32 << 20


def test_parsers_reject_bad_input():
    assert C.parse_shapes("4096x14336, 14336x4096") == [(4096, 14336), (14336, 4096)]
    assert C.parse_int_list("1,2,4") == [1, 2, 4]
    assert C.parse_choices("all", ("a", "b"), "mode") == ["a", "b"]
    for bad in ("4096", "0x5", "axb"):
        with pytest.raises(ValueError, match="shape"):
            C.parse_shapes(bad)
    with pytest.raises(ValueError, match="integers"):
        C.parse_int_list("1,x")
    with pytest.raises(ValueError, match="unknown mode"):
        C.parse_choices("a,zzz", ("a", "b"), "mode")


def test_tables_and_csv(tmp_path):
    rows = [{"a": "x", "b": 1.23456, "c": None}, {"a": "yy", "b": 10.0, "c": 3}]
    cols = (C.Column("a", "A"), C.Column("b", "B", "{:.2f}"), C.Column("c", "C", "{:d}"))
    txt = C.text_table(rows, cols)
    assert "1.23" in txt and "10.00" in txt and txt.splitlines()[1].startswith("--")
    md = C.markdown_table(rows, cols)
    assert md.splitlines()[2] == "| x | 1.23 | - |"
    path = C.write_csv(rows, tmp_path / "r.csv")
    got = list(csv.DictReader(path.open()))
    assert got[0]["b"] == "1.23456" and got[0]["c"] == "" and got[1]["c"] == "3"


def test_bench_cpu_smoke_through_cli(tmp_path):
    """The whole harness on one tiny shape: every mode runs, agrees with the reference arithmetic,
    and the CSV / PNG / RESULTS.md come out with consistent derived columns."""
    from nybble.cli import main
    out = tmp_path / "cpu"
    rc = main(["bench", "cpu", "--shapes", "256x128", "--m", "1,5", "--kernel", "reference",
               "--reps", "3", "--min-reps", "2", "--cell-seconds", "0.01", "--cache-factor", "0.001",
               "--out", str(out)])
    assert rc == 0
    rows = list(csv.DictReader((out / "kernels.csv").open()))
    modes = {"nybble_a16w4_bf16", "nybble_a16w4_fp32", "nybble_a8w4", "torch_int4", "torch_fp32", "torch_bf16"}
    assert {(r["m"], r["mode"]) for r in rows} == {(m, mode) for m in ("1", "5") for mode in modes}
    from nybble.bench.cpu import weight_bytes_estimate
    l3 = C.cpu_cache_bytes()
    for r in rows:
        us = float(r["median_us"])
        # copies: enough to exceed 0.001 x this machine's L3 (so more than 2 where L3 is large)
        want = C.copies_for(weight_bytes_estimate(r["mode"], 256, 128, 128), l3, 0.001)
        assert us > 0 and int(r["reps"]) >= 2 and int(r["copies"]) == want >= 2
        assert float(r["weight_gbps"]) == pytest.approx(int(r["weight_bytes"]) / us / 1e3, rel=1e-3)
        assert float(r["gflops"]) == pytest.approx(2 * int(r["m"]) * 256 * 128 / us / 1e3, rel=1e-3)
        if r["mode"] == "torch_fp32":
            assert float(r["x_fp32"]) == pytest.approx(1.0)
        assert float(r["probe_gbps"]) > 0
        split = int(r["rounds_fast"]) + int(r["rounds_slow"]) + int(r["rounds_mixed"])
        assert int(r["rounds"]) == int(r["reps"]) and split in (0, int(r["rounds"]))  # 0: one regime, unsplit
        if r["check_rel_err"]:
            assert float(r["check_rel_err"]) < 3e-2, r
    # per-round figures: medians over the rounds of rounds.csv of per-round ratios
    import statistics
    rounds = list(csv.DictReader((out / "rounds.csv").open()))
    for r in rows:
        sel = [x for x in rounds if x["m"] == r["m"]]
        assert len(sel) == int(r["rounds"])
        us = [float(x[r["mode"] + "_us"]) for x in sel]
        assert float(r["median_us"]) == pytest.approx(statistics.median(us), rel=1e-4)
        x4 = statistics.median(float(x["torch_int4_us"]) / float(x[r["mode"] + "_us"]) for x in sel)
        assert float(r["x_int4"]) == pytest.approx(x4, rel=1e-4)
        # the probe's bytes from a round's rate and its two calls' mean time
        x0 = sel[0]
        pb = float(x0["probe_gbps"]) * 1e3 * 0.5 * (float(x0["probe_before_us"]) + float(x0["probe_after_us"]))
        pct = statistics.median(100 * int(r["weight_bytes"]) * 0.5 * (float(x["probe_before_us"]) + float(
            x["probe_after_us"])) / (pb * float(x[r["mode"] + "_us"])) for x in sel)
        assert float(r["pct_bw"]) == pytest.approx(pct, rel=1e-3)
        fast = [x for x in sel if x["regime"] == "fast"]
        if fast:
            assert float(r["median_us_fast"]) == pytest.approx(
                statistics.median(float(x[r["mode"] + "_us"]) for x in fast), rel=1e-4)
        assert {x["regime"] for x in sel} <= ({"unsplit"} if int(r["rounds_fast"]) + int(r["rounds_slow"]) + int(
            r["rounds_mixed"]) == 0 else {"fast", "slow", "mixed"})
        assert sum(x["regime"] == "fast" for x in sel) == int(r["rounds_fast"])
    # int4 weight bytes: codes + bf16 scales + int8 zero points (group 128)
    a16 = next(r for r in rows if r["mode"] == "nybble_a16w4_bf16")
    assert int(a16["weight_bytes"]) == 128 * 256 // 2 + 128 * 2 * 3
    assert (out / "speedup.png").stat().st_size > 1000
    probes = list(csv.DictReader((out / "bandwidth.csv").open()))
    kinds = [p["kind"] for p in probes]
    assert kinds.count("interleaved") == 2 and kinds.count("block") == 1 and kinds.count("run") == 1
    assert {p["m"] for p in probes if p["kind"] == "interleaved"} == {"1", "5"}
    per_m = {p["m"]: float(p["median_gbps"]) for p in probes if p["kind"] == "interleaved"}
    assert all(float(r["probe_gbps"]) == pytest.approx(per_m[r["m"]], rel=1e-3) for r in rows)
    block = next(p for p in probes if p["kind"] == "block")
    assert int(block["copies"]) >= 2 and int(block["reps"]) >= 4
    md = (out / "RESULTS.md").read_text()
    assert "nybble bench cpu --shapes 256x128" in md and "DRAM read bandwidth" in md
    assert "fast / slow rounds" in md and "rounds all/fast/slow/mixed" in md
    # --rerender rebuilds the report from the saved files alone (also without run.json)
    (out / "RESULTS.md").rename(out / "old.md")
    assert main(["bench", "cpu", "--rerender", str(out)]) == 0
    new = (out / "RESULTS.md").read_text()
    # same report; numbers may differ in the last digit (the CSV keeps 6 significant digits)
    assert len(new.splitlines()) == len(md.splitlines())
    assert new.split("## Linear layers")[0].split("| DRAM")[0] == md.split("## Linear layers")[0].split("| DRAM")[0]
    (out / "run.json").unlink()
    (out / "old.md").rename(out / "RESULTS.md")
    assert main(["bench", "cpu", "--rerender", str(out)]) == 0
    again = (out / "RESULTS.md").read_text()
    assert "nybble bench cpu --shapes 256x128" in again and "| torch | " in again


def test_bench_cpu_rejects_bad_flags(tmp_path, capsys):
    from nybble.cli import main
    assert main(["bench", "cpu", "--modes", "nope", "--out", str(tmp_path)]) == 1
    assert "unknown mode" in capsys.readouterr().err
    assert main(["bench", "cpu", "--shapes", "100x128", "--out", str(tmp_path)]) == 1
    assert main(["bench"]) == 2


def test_e2e_tiny_model_in_subprocess(tmp_path):
    """One quantized variant of a tiny Llama end to end, in its own subprocess (as the real run)."""
    from nybble.bench import e2e_cpu
    rc = e2e_cpu.cli(["--layers", "1", "--hidden", "128", "--intermediate", "256", "--heads", "4",
                      "--kv-heads", "2", "--vocab", "512", "--prompt-tokens", "16", "--decode-tokens", "3",
                      "--variants", "nybble_a16w4", "--kernel", "reference", "--threads", "1",
                      "--attention", "nybble", "--fuse", "1", "--out", str(tmp_path)])
    assert rc == 0
    (r,) = list(csv.DictReader((tmp_path / "e2e.csv").open()))
    assert r["variant"] == "nybble_a16w4" and r["kernel"] == "reference" and not r["error"]
    assert r["attention"] == "nybble" and r["fused_groups"] == "2"
    assert float(r["decode_tok_s"]) > 0 and float(r["prefill_tok_s"]) > 0
    assert int(r["decode_tokens"]) == 3 and int(r["prompt_tokens"]) == 16
    assert float(r["peak_rss_mib"]) > 0 and float(r["rss_setup_mib"]) > float(r["rss_base_mib"]) > 0
    # int4 linears + bf16 embedding/norms: well under the bf16 size (2 bytes per parameter)
    assert float(r["model_mib"]) < 0.75 * int(r["params"]) * 2 / 2**20


def test_e2e_default_nybble_models_are_the_torch_int4_model():
    """With the default ``--e2e-zero-point none`` the nybble variants hold exactly the int4 codes and
    scales of the torch_int4 variant ("the same model on PyTorch's int4 kernel"); ``int`` differs."""
    import nybble
    from nybble.bench.e2e_cpu import OPTIONS, build_model, variant_config
    from nybble.tensor import Int4Linear
    assert OPTIONS["zero-point"][1] == "none"

    def plains(variant, zp):
        m = build_model(1, 128, 256, 4, 2, 64)
        cfg, force = variant_config(variant, zp, "nybble_cpu")
        nybble.quantize(m, cfg, force_kernel=force, show_progress=False)
        return {n: mod.plain() for n, mod in m.named_modules() if isinstance(mod, Int4Linear)}

    ref = plains("torch_int4", "none")
    assert len(ref) == 8  # q, k, v, o, gate, up, down, lm_head
    for variant in ("nybble_a16w4", "nybble_a8w4"):
        got = plains(variant, "none")
        assert got.keys() == ref.keys()
        for name, p in got.items():
            assert p.zero_point is None and ref[name].zero_point is None
            assert torch.equal(p.qdata, ref[name].qdata) and torch.equal(p.scale, ref[name].scale), name
    asym = plains("nybble_a16w4", "int")
    assert all(p.zero_point is not None for p in asym.values())
    assert not all(torch.equal(p.qdata, ref[n].qdata) for n, p in asym.items())
    with pytest.raises(ValueError, match="no int4 config"):
        variant_config("bf16", "none", "nybble_cpu")


def test_build_model_is_random_llama():
    from nybble.bench.e2e_cpu import build_model
    m = build_model(1, 64, 128, 4, 2, 100)
    w = m.model.layers[0].mlp.up_proj.weight.detach()
    assert w.dtype == torch.bfloat16 and 0.01 < float(w.float().std()) < 0.03
    assert torch.isfinite(m.model.rotary_emb.inv_freq).all()
    ids = torch.randint(0, 100, (1, 5))
    with torch.inference_mode():
        assert torch.isfinite(m(input_ids=ids).logits.float()).all()


def test_regime_split_on_synthetic_probe_readings():
    from nybble.bench.cpu import regime_split
    slow = [38.0 + (i % 7) for i in range(60)]      # 38..44 GB/s
    fast = [66.0 + (i % 11) for i in range(40)]     # 66..76 GB/s
    s = regime_split(slow + fast)
    assert s["rule"] == "otsu" and 44.0 < s["threshold_gbps"] < 66.0
    assert s["threshold_gbps"] == pytest.approx((44.0 * 66.0) ** 0.5)  # geometric middle of the gap
    assert 38 < s["low_gbps"] < 44 and 66 < s["high_gbps"] < 76
    # one regime (spread within 1.25x): no split
    assert regime_split(slow)["threshold_gbps"] is None and regime_split(slow)["rule"] == "none"
    # a few outliers below min_share do not make a regime of their own
    assert regime_split(slow + [5.0, 6.0])["rule"] == "none"
    # nor does one wide peak (a flat spread 30..52 GB/s: means 1.3x apart, but not separated)
    flat = [30.0 + 22.0 * i / 299 for i in range(300)]
    assert regime_split(flat)["rule"] == "none" and regime_split(flat)["separation"] < 3.5
    # two regimes far apart (1.7x) with readings in between: D < 3.5, still split
    wide = [36.0 + (i % 9) for i in range(60)] + [70.0 + (i % 17) for i in range(40)] + [45.0 + 20.0 * i / 99 for i in range(100)]
    w = regime_split(wide)
    assert w["rule"] == "otsu" and 2.5 <= w["separation"] < 3.5 and w["high_gbps"] / w["low_gbps"] >= 1.5
    # too few readings, or all equal
    assert regime_split([40.0, 70.0])["rule"] == "none" and regime_split([50.0] * 30)["rule"] == "none"
    # a fixed threshold wins, whatever the data
    f = regime_split(slow + fast, fixed_gbps=55.0)
    assert f["threshold_gbps"] == 55.0 and f["rule"] == "fixed" and f["low_gbps"] < 45 < 66 < f["high_gbps"]
    with pytest.raises(ValueError, match="fast-gbps"):
        regime_split(slow, fixed_gbps=0.0)


def test_classify_rounds_uses_both_probes_around_a_round():
    from nybble.bench.cpu import classify_rounds
    # probe readings before round 0, between rounds 0/1, 1/2, 2/3 and after round 3
    assert classify_rounds([70, 72, 40, 41, 80], 55.0) == ["fast", "mixed", "slow", "mixed"]
    assert classify_rounds([55.0, 55.0], 55.0) == ["slow"]  # at the threshold counts as slow
    assert classify_rounds([70, 40, 70], None) == ["unsplit", "unsplit"]


def test_cell_stats_medians_of_per_round_ratios():
    from nybble.bench.cpu import RoundTimes, cell_stats
    # 4 rounds; probe of 1e6 bytes: 10 us (100 GB/s) around rounds 0-1, 20 us (50 GB/s) around round 3
    rt = RoundTimes(us={"nybble_a8w4": [10.0, 12.0, 30.0, 22.0], "torch_int4": [20.0, 18.0, 33.0, 22.0]},
                    probe_us=[10.0, 10.0, 10.0, 20.0, 20.0], k=256, n=128, m=1)
    labels = ["fast", "fast", "mixed", "slow"]
    st = cell_stats(rt, labels, {"nybble_a8w4": 500_000, "torch_int4": 600_000}, 1_000_000)
    a8 = st["nybble_a8w4"]
    assert (a8["rounds"], a8["rounds_fast"], a8["rounds_slow"], a8["rounds_mixed"]) == (4, 2, 1, 1)
    assert a8["median_us"] == pytest.approx(17.0) and a8["median_us_fast"] == pytest.approx(11.0)
    assert a8["median_us_slow"] == pytest.approx(22.0) and a8["min_us"] == 10.0
    # per-round speedups 2.0, 1.5, 1.1, 1.0 -> median 1.3 (not 23 us / 17 us of the medians)
    assert a8["x_int4"] == pytest.approx(1.3) and a8["x_int4_fast"] == pytest.approx(1.75)
    assert a8["x_int4_slow"] == pytest.approx(1.0)
    assert a8["x_bf16"] is None and st["torch_int4"]["x_int4"] == pytest.approx(1.0)
    # %BW per round = 100 * 5e5 * probe_us / (1e6 * us): 50, 41.67, 25 (probe 15 us), 45.45
    assert a8["pct_bw_fast"] == pytest.approx((50 + 500 / 12) / 2)
    assert a8["pct_bw_slow"] == pytest.approx(100 * 0.5 * 20 / 22)
    assert a8["pct_bw"] == pytest.approx((500 / 12 + 100 * 0.5 * 20 / 22) / 2)
    assert st["probe"]["probe_gbps_fast"] == pytest.approx(100.0) and st["probe"]["probe_gbps_slow"] == pytest.approx(50.0)
    assert a8["gflops_fast"] == pytest.approx(2 * 256 * 128 / 11.0 / 1e3)
    # an empty selection gives None, not an error
    none = cell_stats(rt, ["slow"] * 4, {"nybble_a8w4": 1, "torch_int4": 1}, 1)["nybble_a8w4"]
    assert none["rounds_fast"] == 0 and none["median_us_fast"] is None and none["x_int4_fast"] is None
    with pytest.raises(ValueError, match="labels"):
        cell_stats(rt, labels[:3], {"nybble_a8w4": 1, "torch_int4": 1}, 1)


def test_targets_report_all_and_fast_rounds_side_by_side():
    from nybble.bench.cpu import _verdict, targets
    row = {"shape": "4096x14336", "m": 1, "mode": "nybble_a8w4", "n": 14336, "k": 4096, "min_us": 800.0,
           "pct_bw": 93.0, "pct_bw_fast": 95.0, "pct_bw_slow": 92.0, "x_int4": 1.2, "x_int4_fast": 1.9,
           "x_int4_slow": 1.1, "x_bf16": 6.0, "x_bf16_fast": 10.0, "x_bf16_slow": 5.5,
           "rounds": 100, "rounds_fast": 60, "rounds_slow": 35}
    ts = {t["target"]: t for t in targets([row])}
    t = ts["decode M=1 4096x14336 nybble_a8w4: speedup vs torch int4"]
    assert t["met"] is False and t["met_fast"] is True and t["met_slow"] is False
    assert _verdict(t) == "1.20x (NO, 100 rounds)" and _verdict(t, "_fast") == "1.90x (yes, 60 rounds)"
    assert ts["decode M=1 14336x4096 nybble_a8w4: speedup vs torch int4"]["value"] is None


@pytest.mark.parametrize("variant", ["bf16", "nybble_a8w4"])
def test_compiled_decoder_one_graph_no_recompiles_same_tokens(variant):
    """e2e_cpu.Decoder(compile=True): the whole decode step is one graph (fullgraph: a break would
    raise), later steps reuse it, and it decodes the same tokens as the eager DynamicCache path.
    Backend ``eager`` checks dynamo's graph without inductor's (slow) C++ compile."""
    import nybble
    from nybble.bench.e2e_cpu import Decoder, build_model
    torch._dynamo.reset()
    m = build_model(2, 128, 256, 4, 2, 512)
    if variant != "bf16":
        nybble.quantize(m, nybble.Int8DynamicActivationInt4WeightConfig(group_size=32, zero_point="int",
                                                                        act_mapping="symmetric"),
                        force_kernel="nybble_cpu", show_progress=False)
    seen = []

    def backend(gm, example_inputs):
        seen.append(gm)
        return gm.forward
    ids = torch.randint(0, 512, (1, 7), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        eager = Decoder(m)
        toks = [eager.start(ids)]
        for _ in range(5):
            toks.append(eager.step(toks[-1]))
        comp = Decoder(m, compile=True, max_len=16, backend=backend)
        g0 = Decoder.graphs()
        got = [comp.start(ids)]
        for _ in range(5):
            got.append(comp.step(got[-1]))
        assert len(seen) == 1 and Decoder.graphs() - g0 == 1  # compiled once, for the first step
        assert [int(t) for t in got] == [int(t) for t in toks]
        # a second sequence reuses the cache and the graph
        again = [comp.start(ids)]
        for _ in range(3):
            again.append(comp.step(again[-1]))
        assert [int(t) for t in again] == [int(t) for t in toks[:4]] and len(seen) == 1
        with pytest.raises(ValueError, match="static cache"):
            for _ in range(20):
                comp.step(again[-1])
    if variant != "bf16":
        targets = {str(n.target) for n in seen[0].graph.nodes if n.op == "call_function"}
        assert any("nybble" in t for t in targets), targets
