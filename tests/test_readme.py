import doctest
from pathlib import Path

import pytest

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

    pytest.importorskip("torch")
    from onebyone.bench import cell

    bench = json.loads((README.parent / "benchmarks" / "bench.json").read_text())
    rows = {line.split("|")[1].strip(): line.split("|")[3].strip() for line in README.read_text().splitlines()
            if line.startswith("| (")}
    want = {
        "(b) shared MLP 3-64-64-64-128-1024 + max pool, B=32 N=1024: fused vs eager `Conv1d`": cell(
            bench, "b vs eager"
        ),
        "(b) fused vs `torch.compile`": cell(bench, "b vs compile"),
        "(b) fused as a fraction of the run's peak": cell(bench, "b fraction of peak"),
        "(b) ceiling: eager's time over its FLOPs' time at the run's peak": cell(bench, "b ceiling vs eager"),
        "(c) convolutionalized classifier vs the classifier on each of 3,249 crops (28x28, stride 4, 252x252)": cell(
            bench, "c vs each crop"
        ),
        "(d) 5x5 bottleneck speedup as a fraction of its 9.68x MAC ratio": cell(bench, "d of the MAC ratio"),
    }
    for m in bench["optimize"]:
        want[f"(e) `optimize({m['model']})`, batch 8, vs eager"] = cell(bench, f"e {m['model']} vs eager")
        want[f"(e) `optimize({m['model']})`, batch 8, vs `torch.compile`"] = cell(bench, f"e {m['model']} vs compile")
        want[f"(e) {m['model']}: ceiling over eager at the run's peak"] = cell(
            bench, f"e {m['model']} ceiling vs eager"
        )
    for r in bench["pointwise_op"]:
        c = r["c_in"]
        label = (
            f"(a) `Pointwise` vs the best of `F.conv2d` and matmul, {c} -> {r['c_out']} channels, NCHW / channels_last"
        )
        want[label] = cell(bench, f"a {c} nchw") + " / " + cell(bench, f"a {c} channels_last")
    want["(a) control: `F.conv2d` against itself, the run's lowest ratio over widths and layouts"] = cell(
        bench, "a control"
    )
    assert {k: rows.get(k) for k in want} == want
    mem = bench["shared_mlp"]["peak_extra_bytes"]
    assert (
        rows["(b) peak extra memory, fused vs eager"] == f"{mem['fused'] / 1e6:.1f} MB vs {mem['eager'] / 1e6:.1f} MB"
    )
