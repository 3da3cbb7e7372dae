"""`onebyone bench`: its CLI, its JSON and roofline, its reliability flags, each contender timed after its
own calls, and the process-wide malloc setting it makes."""
import pytest

from onebyone.cli import main
from onebyone.torch.fast import capabilities

from .test_timing import _switching_engines


def test_bench_times_each_contender_after_its_own_calls(monkeypatch):
    from onebyone.bench.sections import timeit

    engine = _switching_engines(monkeypatch, slow_calls=3)
    fns = {"eager": engine("eager", 1e-4), "onnxruntime": engine("onnxruntime", 2e-4)}
    spread = {}
    assert timeit(fns, repeat=5, spread=spread) == pytest.approx({"eager": 1e-4, "onnxruntime": 2e-4})
    assert spread == pytest.approx({"eager": 1.0, "onnxruntime": 1.0})  # every round alike, not just the best


def test_hold_freed_memory_stops_page_faults_of_reused_activations():
    import platform
    import subprocess
    import sys

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        from onebyone.bench import hold_freed_memory
        assert hold_freed_memory() is False
        return
    # in a fresh process: first glibc's low-threshold state (every 20 MB block mmapped, unmapped when
    # freed), then after hold_freed_memory(): the same loop must stop faulting its pages in again
    code = """
import ctypes, resource, torch
from onebyone.bench import hold_freed_memory
ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)
def faults():
    # warm-up: the heap takes a few fresh blocks before it reuses freed ones (torch's aligned requests need a
    # little more than a freed block of the same size holds, until two freed neighbours merge), so enough
    # warm-up blocks come first for the measured loop to see only reuse
    for _ in range(8):
        torch.empty(5 << 20).fill_(1.0)
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        torch.empty(5 << 20).fill_(1.0)  # 20 MB, written, freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0
before = faults()
assert hold_freed_memory() is True
print(before, faults())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    before, after = int(out[0]), int(out[1])
    assert before > 10 * 2000  # ~5,120 pages a block while glibc maps and unmaps it
    assert after < before / 20


def test_several_runs_give_each_headline_as_its_median_and_range(monkeypatch, tmp_path):
    """What --runs does with the runs' results (each run's measuring is the test above's): every run's
    headlines kept, each headline the median with its min and max, the JSON saved after each run."""
    import json

    from onebyone import bench

    ratios = iter([0.9, 1.3, 1.1])

    def one_run(sections, quick, compile_, progress):  # section (a)'s shape, one size, made-up ratios
        r = next(ratios)
        return {"pointwise_op": [{"c_in": 3, "pointwise_vs_best_nchw": r, "pointwise_vs_best_cl": 2 * r,
                                  "control_vs_best": {"nchw": 1.0, "cl": 0.95}}]}

    monkeypatch.setattr(bench, "_run_once", one_run)
    saved = []
    result = bench.run("a", runs=3, progress=False, save=lambda r: saved.append(dict(r)))
    assert [r["a 3 nchw"] for r in result["runs"]] == [0.9, 1.3, 1.1] and len(saved) == 3
    assert result["headlines"]["a 3 nchw"] == 1.1 and result["spread"]["a 3 nchw"] == [0.9, 1.3]
    assert result["headlines"]["a 3 channels_last"] == 2.2 and result["headlines"]["a control"] == 0.95
    assert set(result["headlines"]) == set(result["spread"]) == set(result["runs"][0])
    result |= {"machine": "a test", "peak_gflops": 1.0, "bandwidth_gbs": 1.0}
    del result["pointwise_op"]  # the lines of the last run's measurements are the test above's
    assert "over 3 runs, median (min - max): a 3 nchw 1.10x (0.90x - 1.30x)" in "\n".join(bench.summary(result))
    bench.write(saved[1], str(tmp_path / "r.json"))  # what --json holds after the second run
    assert json.loads((tmp_path / "r.json").read_text())["spread"]["a 3 nchw"] == [0.9, 1.3]


def test_cli_bench_writes_json_and_roofline(tmp_path, capsys):
    import json
    import re
    from pathlib import Path

    args = ["bench", "--quick", "--sections", "a", "--no-compile"]  # several runs: the next test
    assert main(args + ["--json", str(tmp_path / "a.json"), "--png", str(tmp_path / "a.png")]) == 0
    result = json.loads((tmp_path / "a.json").read_text())
    assert [r["c_in"] for r in result["pointwise_op"]] == [3, 64, 256, 1024] and result["peak_gflops"] > 0
    assert result["malloc"] in ("freed memory held (bench.hold_freed_memory)", "as the platform runs it")
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    family = re.search(r"^cpu family\s*:\s*(\d+)\s*^model\s*:\s*(\d+)", cpuinfo, re.M)
    if family:  # an x86 Linux machine names its CPU's generation, which a cloud CPU's name often hides
        assert f"(family {family[1]}, model {family[2]}), " in result["machine"]
    caps = capabilities()  # the machine named by what matters for speed: ISA, oneDNN, bfloat16, AMX, int8 VNNI
    assert result["cpu"] == {"isa": caps.isa, "onednn": caps.onednn, "bf16": caps.bf16, "avx512": caps.avx512,
                             "amx": caps.amx, "vnni": caps.vnni, "amx_int8": caps.amx_int8,
                             "avx512_vnni": caps.avx512_vnni,
                             "describe": caps.describe()}
    out = capsys.readouterr().out
    assert "Pointwise vs the best" in out and "runs" not in result
    assert f"machine: {result['machine']} ({caps.describe()}); peak" in out
    assert all(r["pointwise_cl"] > 0 and 0 < r["roofline"][1]["fraction_of_peak"] for r in result["pointwise_op"])
    controls = [v for r in result["pointwise_op"] for v in r["control_vs_best"].values()]  # F.conv2d against itself
    assert len(controls) == 8 and all(v > 0 for v in controls) and result["headlines"]["a control"] == min(controls)
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    from onebyone import bench  # a run into the same files replaces results of its own, and says so

    assert bench.check_outputs("a", str(tmp_path / "a.json"), str(tmp_path / "a.png")) == [
        str(tmp_path / "a.json"), str(tmp_path / "a.png")]
    assert main(["bench", "--quick", "--sections", "d", "--no-compile", "--json", str(tmp_path / "b.json"),
                 "--png", str(tmp_path / "r.png")]) == 2  # (d) alone has no roofline points: refused before it runs
    assert "--png draws the roofline of sections a and b" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()
    assert main(["bench", "--quick", "--sections", "b", "--no-compile", "--json", str(tmp_path / "b.json")]) == 0
    b = json.loads((tmp_path / "b.json").read_text())
    s = b["shared_mlp"]  # the ceiling: eager's time over its FLOPs' time at the run's peak
    assert s["ceiling_vs_eager"] == pytest.approx(b["peak_gflops"] / s["gflops"]["eager"]) and s["ceiling_vs_eager"] > 1
    assert b["headlines"]["b ceiling vs eager"] == s["ceiling_vs_eager"] and s["max_abs_diff"]["fused"] < 1e-3
    out = capsys.readouterr().out
    assert f"(ceiling {s['ceiling_vs_eager']:.2f}x eager)" in out
    engines = [k for k in ("onnxruntime", "openvino") if k in s["ms"]]  # the peers users deploy, where installed
    assert all(s["max_abs_diff"][k] < 1e-3 for k in engines)  # float32 both (OpenVINO's CPU default may not be)
    if engines:
        assert s["fused_vs_best_engine"] == pytest.approx(min(s["ms"][k] for k in engines) / s["ms"]["fused"])
        assert b["headlines"]["b vs best engine"] == s["fused_vs_best_engine"]
        assert ("than OpenVINO" in out) == ("openvino" in engines)
    if "fused_bf16" in s["ms"]:  # the bfloat16 chain against the bfloat16 peak, measured the same way
        assert s["bf16_ceiling_vs_eager"] == pytest.approx(b["peak_gflops_bf16"] / s["gflops"]["eager"])
        assert s["bf16_fraction_of_peak"] == pytest.approx(s["gflops"]["fused_bf16"] / b["peak_gflops_bf16"])
        assert b["headlines"]["b bf16 ceiling vs eager"] == s["bf16_ceiling_vs_eager"]
        assert f"of the bfloat16 peak (ceiling {s['bf16_ceiling_vs_eager']:.2f}x eager)" in out
    with pytest.raises(SystemExit) as stop:
        main(["bench", "--quick", "--sections", "a", "--runs", "0"])
    assert stop.value.code == 2 and "expected an integer >= 1, got 0" in capsys.readouterr().err
    assert main(["bench", "--quick", "--sections", "x"]) == 2
    assert "--sections takes letters from 'abcdefg'" in capsys.readouterr().err


def test_bench_flags_a_run_whose_rounds_were_busy():
    """A contender whose median round took over 1.5x its best ran on a busy machine: the run says so."""
    from onebyone.bench import reliability

    quiet = {"shared_mlp": {"round_spread": {"eager": 1.02, "fused": 1.04}},
             "optimize": [{"model": "nin_cifar", "round_spread": {"eager": 1.03, "compile": 1.38}}]}
    assert reliability(quiet) == []
    busy = {"shared_mlp": {"round_spread": {"eager": 1.6, "fused": 1.9}},
            "optimize": [{"model": "nin_cifar", "round_spread": {"onnxruntime": 2.5, "eager": 1.7}},
                         {"model": "nin_digits", "round_spread": {"optimized": 1.66, "eager": 1.1}}]}
    said = "its median round took {:.2f}x its best (the machine was busy)"
    assert reliability(busy) == [f"(b) eager: {said.format(1.6)}", f"(b) fused: {said.format(1.9)}",
                                 f"(e) nin_cifar onnxruntime: {said.format(2.5)}",
                                 f"(e) nin_cifar eager: {said.format(1.7)}"]  # one jittery contender alone is not
    above = {"peak_gflops": 200.0, "peak_gflops_bf16": 400.0, "shared_mlp": {
        "gflops": {"eager": 50.0, "fused": 150.0, "fused_bf16": 600.0}, "fused_vs_eager": 3.0,
        "ceiling_vs_eager": 4.0, "bf16_fraction_of_peak": 1.5}}
    assert reliability(above) == ["(b) fused_bf16 ran at 150% of the run's measured bfloat16 peak 400 GFLOP/s"]
    engine = {"peak_gflops": 200.0, "optimize": [{  # Winograd's fewer multiplications: above the 1x1 peak is real
        "model": "nin_cifar", "kept": "OpenVINO", "gflops": {"eager": 50.0, "optimized": 400.0, "openvino": 400.0},
        "vs_eager": 8.0, "ceiling_vs_eager": 4.0}]}
    assert reliability(engine) == []
    engine["optimize"][0]["kept"] = "the eager rewrite"  # our own kernels cannot: the run is flagged
    assert len(reliability(engine)) == 2


def test_the_branches_section_merges_a_repvgg_and_times_it_side_by_side(tmp_path, capsys):
    import json

    assert main(["bench", "--quick", "--sections", "f", "--no-compile", "--json", str(tmp_path / "f.json")]) == 0
    result = json.loads((tmp_path / "f.json").read_text())
    f = result["branches"]
    assert f["blocks_merged"] == 22 and f["max_abs_diff"] < 1e-4 and f["params"][1] < f["params"][0]
    assert set(f["ms"]) == {"training", "merged", "merged_optimized"} and all(v > 0 for v in f["ms"].values())
    assert f["merged_vs_training"] == f["ms"]["training"] / f["ms"]["merged"]
    assert result["headlines"]["f merged vs training"] == f["merged_vs_training"]
    assert "(f) RepVGG-A0, batch 2, 22 blocks merged: merged" in capsys.readouterr().out


def test_the_optimize_section_weighs_the_engines_and_says_what_optimize_kept_and_took():
    from onebyone.bench import headlines, summary
    from onebyone.bench.sections import PEER_ENGINES, optimized_models

    (row,) = optimized_models(quick=True, repeat=1, compile_=False, names=["nin_digits"])
    assert row["kept"] in ("the eager rewrite", "onnxruntime", "OpenVINO") and 0 < row["optimize_seconds"] < 600
    passes = row["optimize_passes"]  # where optimize()'s time went, pass by pass, within its own time
    assert {"fold", "check", "engines"} <= set(passes) and 0 < sum(passes.values()) <= row["optimize_seconds"]
    engines = [k for k in PEER_ENGINES if k in row["ms"]]
    if engines:
        assert row["vs_best_engine"] == pytest.approx(min(row["ms"][k] for k in engines) / row["ms"]["optimized"])
    result = {"machine": "m", "peak_gflops": 1.0, "bandwidth_gbs": 1.0, "optimize": [row | {
        "fraction_of_peak": {}, "ceiling_vs_eager": 1.0}]}
    lines = summary(result | {"headlines": headlines(result)})
    assert f"(e) optimize(nin_digits), batch 8, {row['optimize_seconds']:.1f} s, {row['kept']} kept: " in lines[1]


def test_a_repeated_run_says_why_the_first_was_repeated(monkeypatch):
    import onebyone.bench as bench

    busy = {"shared_mlp": {"round_spread": {"fused": 1.9, "eager": 1.7}}}
    results = iter([busy, {"shared_mlp": {"round_spread": {"fused": 1.01}}}])
    monkeypatch.setattr(bench, "_run_once", lambda *args: dict(next(results)))
    monkeypatch.setattr(bench, "headlines", lambda result: {})
    result = bench.run("b", quick=True, compile_=False, progress=False)
    assert result["unreliable"] == [] and len(result["repeated_because"]) == 2
    assert result["repeated_because"][0].startswith("(b) fused: its median round took 1.90x its best")


def test_the_bench_keeps_each_finished_run(monkeypatch):
    from onebyone import bench

    counter = iter(range(100))
    monkeypatch.setattr(bench, "_run_once", lambda *a: {"bottleneck": {"speedup_vs_mac_ratio": float(next(counter))}})
    saved = []
    bench.run("d", runs=3, progress=False, save=lambda r: saved.append(dict(r)))
    assert [len(r.get("runs", [r])) for r in saved] == [1, 2, 3]  # written after each run, not only at the end
    assert saved[-1]["headlines"]["d of the MAC ratio"] == 1.0


def test_models_the_bench_cannot_build_are_named_not_dropped(monkeypatch):
    import sys

    from onebyone import bench
    from onebyone.bench.sections import _real_models

    monkeypatch.setitem(sys.modules, "transformers", None)  # as if it failed to import
    skipped = []
    assert _real_models(skipped) == {} and "transformers does not import here" in skipped[0]
    lines = bench.summary({"machine": "m", "peak_gflops": 100.0, "bandwidth_gbs": 9.0, "optimize_skipped": skipped})
    assert f"not in this run: {skipped[0]}" in lines


@pytest.mark.filterwarnings("ignore:optimize. bfloat16 was timed and ran no faster")  # a 0.1 ms model: may be so
def test_the_int8_section_times_optimize_against_each_engines_int8_and_measures_every_error():
    """Section (g) on the smallest zoo model: optimize() and each engine in float32, bfloat16 (where the CPU
    has it) and int8, every form timed on a batch no form calibrated on, each form's error against float32
    within int8's default tolerance (the float32 forms' within 1e-4), the ratios the headlines quote computed
    from the times shown, and the models' outputs made to vary with the input first (else errors mean nothing)."""
    import importlib.util

    import torch

    from onebyone.bench import headlines, summary
    from onebyone.bench.int8 import int8_models, unit_outputs
    from onebyone.bench.sections import timeit
    from onebyone.torch.fast import capabilities
    from onebyone.torch.fast.int8_engines import INT8_TOL
    from onebyone.zoo import create_model

    skipped = []
    (row,) = int8_models(True, 1, timeit, names=["nin_digits"], skipped=skipped)
    have = {m: importlib.util.find_spec(m) is not None for m in ("onnxruntime", "openvino", "nncf")}
    bf16 = capabilities().bf16
    engines = [k for k, ok in (("onnxruntime_int8", have["onnxruntime"]),
                               ("openvino_int8", have["openvino"] and have["nncf"])) if ok]
    floats = [k for k, ok in (("onnxruntime", have["onnxruntime"]), ("openvino", have["openvino"]),
                              ("openvino_bf16", have["openvino"] and bf16), ("optimized_bf16", bf16)) if ok]
    assert {"eager", "optimized", "optimized_int8", *engines, *floats} == set(row["ms"]) and not skipped
    assert all(0 <= e < 0.05 for e in row["error"].values())
    assert all(row["error"][k] < 1e-4 for k in ("optimized", "onnxruntime", "openvino") if k in row["error"])
    assert row["kept"] == "float32" or row["race_error"][row["kept"]] <= INT8_TOL  # kept within dtype_tol
    assert row["int8_vs_float32"] == pytest.approx(row["ms"]["optimized"] / row["ms"]["optimized_int8"])
    if engines:
        best = min(row["ms"][k] for k in engines)
        assert row["int8_vs_best_int8_engine"] == pytest.approx(best / row["ms"]["optimized_int8"])
    result = {"int8": [row], "machine": "m", "peak_gflops": 1.0, "bandwidth_gbs": 1.0, "peak_gops_int8": 2.0}
    assert headlines(result)["g nin_digits int8 vs float32"] == row["int8_vs_float32"]
    lines = summary(result)
    (line,) = [line for line in lines if line.startswith("(g) nin_digits, batch 8: optimize() in int8")]
    assert f"ms a call: eager {row['ms']['eager']:.3g}" in line
    assert "2 GOP/s in int8" in lines[0]
    torch.manual_seed(0)
    model, x = create_model("mobilenet_v1", alpha=0.25).eval(), torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        before, after = model(x), unit_outputs(model, x[:2])(x)
    assert before.std(0).max() < 1e-6 * before.abs().max() < after.std(0).max() / after.abs().max() > 1e-3
