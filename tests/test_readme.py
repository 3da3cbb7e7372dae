import doctest
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_examples_run():
    result = doctest.testfile(str(README), module_relative=False, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 3 and result.failed == 0


def test_readme_quick_start_is_the_two_make_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
    assert "y[n, o, h, w] = sum_c W[o, c] * x[n, c, h, w] + b[o]" in text.split("## Quick start")[0]


def test_readme_speed_table_is_the_published_bench_run():
    import json

    bench = json.loads((README.parent / "benchmarks" / "bench.json").read_text())
    rows = {line.split("|")[1].strip(): line.split("|")[3].strip() for line in README.read_text().splitlines()
            if line.startswith("| (")}
    b = bench["shared_mlp"]
    assert rows["(b) shared MLP 3-64-64-64-128-1024 + max pool, B=32 N=1024: fused vs eager `Conv1d`"].startswith(f"{b['fused_vs_eager']:.2f}x")
    assert rows["(b) fused vs `torch.compile`"].startswith(f"{b['fused_vs_compile']:.2f}x")
    assert rows["(d) 5x5 bottleneck speedup vs its 9.68x MAC ratio"].startswith(f"{bench['bottleneck']['speedup']:.2f}x")
    for m in bench["optimize"]:
        key = f"(e) `optimize({m['model']})`, batch 8, vs eager / vs `torch.compile`"
        assert rows[key] == f"{m['vs_eager']:.2f}x / {m['vs_compile']:.2f}x"
    assert f"{bench['dense_prediction']['speedup']:.0f}x crop by crop" in rows[next(k for k in rows if k.startswith("(c)"))]
