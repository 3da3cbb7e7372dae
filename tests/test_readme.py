import doctest
import json
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
RESULTS = README.parent / "benchmarks" / "README.md"  # the results page: the latest figures
HISTORY = README.parent / "benchmarks" / "HISTORY.md"  # how they were reached, with the older runs


def test_readme_examples_run():
    result = doctest.testfile(str(README), module_relative=False, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 3 and result.failed == 0


def test_readme_quick_start_is_the_two_make_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
    assert "y[n, o, h, w] = sum_c W[o, c] * x[n, c, h, w] + b[o]" in text.split("## Quick start")[0]


def rows(path: Path, opener: str) -> dict:
    """The claim -> measured cells of the table rows that start with ``opener`` in a markdown file."""
    return {line.split("|")[1].strip(): line.split("|")[-2].strip()
            for line in path.read_text().splitlines() if line.startswith(opener)}


def table(path: Path) -> dict:
    """The claim -> measured cells of the speed table in a markdown file (the last column: the results page
    also has the targets)."""
    return rows(path, "| (")


def published_cells() -> dict:
    """Every row the published bench run supports, as the tables write it (``bench.cell``)."""
    import json

    from onebyone.bench import cell

    bench = json.loads((README.parent / "benchmarks" / "bench.json").read_text())
    want = {
        "(b) shared MLP 3-64-64-64-128-1024 + max pool, B=32 N=1024: fused vs eager `Conv1d`":
            cell(bench, "b vs eager"),
        "(b) fused vs `torch.compile`": cell(bench, "b vs compile"),
        "(b) fused as a fraction of the run's peak": cell(bench, "b fraction of peak"),
        "(b) ceiling: eager's time over its FLOPs' time at the run's peak": cell(bench, "b ceiling vs eager"),
        "(c) convolutionalized classifier vs the classifier on each of 3,249 crops (28x28, stride 4, 252x252)":
            cell(bench, "c vs each crop"),
        "(d) 5x5 bottleneck speedup as a fraction of its 9.68x MAC ratio": cell(bench, "d of the MAC ratio"),
    }
    want |= int8_cells()
    for m in bench["optimize"]:
        name = m["model"]
        want[f"(e) `optimize({name})`, batch 8, vs eager"] = cell(bench, f"e {name} vs eager")
        want[f"(e) `optimize({name})`, batch 8, vs `torch.compile`"] = cell(bench, f"e {name} vs compile")
        want[f"(e) {name}: ceiling over eager at the run's peak"] = cell(bench, f"e {name} ceiling vs eager")
    for r in bench["pointwise_op"]:
        c = r["c_in"]
        label = (f"(a) `Pointwise` vs the best of `F.conv2d` and matmul, {c} -> {r['c_out']} channels, "
                 "NCHW / channels_last")
        want[label] = cell(bench, f"a {c} nchw") + " / " + cell(bench, f"a {c} channels_last")
    want["(a) control: `F.conv2d` against itself, the run's lowest ratio over widths and layouts"] = cell(
        bench, "a control")
    mem = bench["shared_mlp"]["peak_extra_bytes"]
    want["(b) peak extra memory, fused vs eager"] = f"{mem['fused'] / 1e6:.1f} MB vs {mem['eager'] / 1e6:.1f} MB"
    return want


def int8_cells() -> dict:
    """The int8 rows as the tables write them: section (g) of ``benchmarks/bench_int8.json`` (the Zen 4 run),
    and as "(g, Xeon)" of ``bench_int8_xeon.json``."""
    from onebyone.bench import cell

    want = {}
    for name, tag in (("bench_int8.json", "(g)"), ("bench_int8_xeon.json", "(g, Xeon)")):
        want |= _int8_rows(json.loads((README.parent / "benchmarks" / name).read_text()), tag, cell)
    return want


def _int8_rows(bench: dict, tag: str, cell) -> dict:
    want = {}
    for row in bench["int8"]:
        call = f"{tag} `optimize({row['model']}, dtype=torch.int8)`"
        want[f"{call} vs `optimize()` in float32"] = cell(bench, f"g {row['model']} int8 vs float32")
        want[f"{call} vs the faster engine's int8"] = cell(bench, f"g {row['model']} int8 vs best int8 engine")
    return want


def test_benchmark_tables_are_the_published_bench_run():
    pytest.importorskip("torch")
    want = published_cells()
    assert table(RESULTS) == want  # every row, and only those
    headlines = table(README)
    assert len(headlines) >= 7 and headlines == {k: want[k] for k in headlines}  # the README's rows, as published


def test_readme_is_for_users():
    text = README.read_text()
    assert len(text.encode()) < 14_000, "measurement accounts belong in benchmarks/README.md"
    assert "seeds" not in text and "Truly understanding 1x1 convolutions" in text  # sources cited by title


def bench_run(name: str) -> dict:
    import json

    return json.loads((README.parent / "benchmarks" / name).read_text())


def cells(bench: dict, labels: dict) -> dict:
    """{label: the cell as the tables write it (``bench.cell``)} of each headline ``labels`` names."""
    from onebyone.bench import cell

    return {label: cell(bench, key) for key, label in labels.items() if key in bench["headlines"]}


def peer_cells() -> dict:
    """The rows of the bfloat16-and-peers table (benchmarks/bench_peers.json, one full run), as written."""
    bench = bench_run("bench_peers.json")
    labels = {"b bf16 vs eager": "[b] PointNet chain in bfloat16 vs eager float32 `Conv1d`",
              "b bf16 vs fused": "[b] PointNet chain in bfloat16 vs our float32 chain",
              "b bf16 ceiling vs eager": "[b] its ceiling: the bfloat16 peak over eager float32's GFLOP/s"}
    for row in bench["optimize"]:
        m = row["model"]
        labels |= {f"e {m} bf16 vs optimize": f"[e] `optimize({m}, dtype=bfloat16)` vs `optimize()` in float32",
                   f"e {m} vs compile": f"[e] `optimize({m})` vs `torch.compile`",
                   f"e {m} vs compile frozen": f"[e] `optimize({m})` vs `torch.compile` with freezing",
                   f"e {m} vs onnxruntime": f"[e] `optimize({m})` vs onnxruntime",
                   f"e {m} vs best peer": f"[e] `optimize({m})` vs the fastest of the three",
                   f"e {m} with compile vs best peer": f"[e] `optimize({m}, compile=True)` vs the fastest of the three"}
    return cells(bench, labels)


# the file -> the tag in its labels. The latest run on each machine, one column each on the results page:
ENGINE_RUNS = {"bench_engines.json": "", "bench_engines_dec6.json": " Dec 6", "bench_engines_xeon.json": " Xeon"}
OLDER_ENGINE_RUNS = {"bench_engines_dec3.json": " Dec 3", "bench_engines_dec5.json": " Dec 5"}  # in HISTORY.md


def engine_cells(runs: dict = ENGINE_RUNS) -> dict:
    """The rows of the engines tables (``onebyone bench --sections be --runs 3`` on the machine each names),
    as written, each label tagged with its run (``{e Dec 6}``)."""
    want = {}
    for name, tag in runs.items():
        bench, b, e = bench_run(name), f"{{b{tag}}}", f"{{e{tag}}}"
        labels = {"b vs best engine": f"{b} PointNet chain, B=32 N=1024, vs the faster of onnxruntime and OpenVINO",
                  "b vs onnxruntime": f"{b} PointNet chain vs onnxruntime",
                  "b vs openvino": f"{b} PointNet chain vs OpenVINO"}
        for row in bench["optimize"]:
            m = row["model"]
            labels |= {f"e {m} vs best engine": f"{e} `optimize({m})` vs the faster of onnxruntime and OpenVINO",
                       f"e {m} optimize seconds": f"{e} `optimize({m})`: its own time"}
            if "vs_compile" in row:  # the bench compiles models under 2 GMACs a sample
                labels[f"e {m} vs best peer"] = (f"{e} `optimize({m})` vs the fastest of onnxruntime, OpenVINO "
                                                 "and `torch.compile`")
        want |= cells(bench, labels)
    return want


def run_columns(path: Path, opener: str, runs: dict) -> dict:
    """The rows of a table with one column per run, each headed by the run's file, read as ``rows`` reads one
    run's table: the claim tagged with the column's run (``{e}`` -> ``{e Dec 6}``) -> its cell."""
    lines = path.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(opener))
    heads = lines[first - 2].split("|")[2:-1]  # the header row, above the |---| row
    tags = [next(tag for name, tag in runs.items() if f"`{name}`" in head) for head in heads]
    out = {}
    for line in lines[first:]:
        if line.startswith(opener):
            claim, *columns = (c.strip() for c in line.split("|")[1:-1])
            out |= {claim.replace("}", f"{tag}}}", 1): c for tag, c in zip(tags, columns, strict=True)}
    return out


def peer_rows(path: Path, opener: str) -> dict:
    """The bfloat16-and-peers rows: the bfloat16 ones on the results page, those against the peers (superseded
    by the engines table) in HISTORY.md; the two together, and no row on both."""
    latest, older = rows(RESULTS, opener), rows(HISTORY, opener)
    assert not set(latest) & set(older) and latest and all("bfloat16" in k for k in latest)
    return latest | older


@pytest.mark.parametrize("cells_of,shown,opener",
                         [(peer_cells, peer_rows, "| ["),
                          (engine_cells, lambda path, opener: run_columns(path, opener, ENGINE_RUNS), "| {")],
                         ids=["peers", "engines"])
def test_the_bfloat16_and_engines_tables_are_their_bench_runs(cells_of, shown, opener):
    pytest.importorskip("torch")
    want = cells_of()
    assert shown(RESULTS, opener) == want and len(want) >= 10
    headlines = rows(README, opener)
    assert len(headlines) >= 3 and headlines == {k: want[k] for k in headlines}


def test_the_older_engines_runs_in_the_history_are_their_bench_runs():
    pytest.importorskip("torch")
    want = engine_cells(OLDER_ENGINE_RUNS)
    assert rows(HISTORY, "| {") == want and len(want) >= 10


def test_the_results_page_is_short():
    assert len(RESULTS.read_text().splitlines()) < 250, "how a figure was reached belongs in benchmarks/HISTORY.md"


def test_the_reparameterized_rows_are_their_bench_run():
    """The timm rows of the engines table: ``benchmarks/reparam_engines.json``'s ratios, as written."""
    run = json.loads((README.parent / "benchmarks" / "reparam_engines.json").read_text())
    text = README.read_text()
    for row in run["rows"]:
        ratio = row["vs_best_engine_given_the_same_model"]
        assert (f"| timm `{row['model']}` (training form), B={row['batch']}: `optimize()` vs the faster engine "
                f"given it | {ratio:.2f}x |") in text


def test_the_int8_accuracies_are_their_run():
    """The README's int8 sentence: ``benchmarks/int8_accuracy.json``'s kept form against float32, as written."""
    run = json.loads((README.parent / "benchmarks" / "int8_accuracy.json").read_text())["runs"]
    nin, pn = run["nin_digits on digits"], run["pointnet_cls on shapes3d (256 points)"]
    kn, kp = nin["forms"][nin["kept"]], pn["forms"][pn["kept"]]
    want = (f"`nin_digits` scored {kn['accuracy']:.2f}% against {nin['float32_accuracy']:.2f}% (agreeing on "
            f"{kn['agreement']:.2f}%), `pointnet_cls` {kp['accuracy']:.2f}% against {pn['float32_accuracy']:.2f}% "
            f"({kp['agreement']:.2f}%).")
    assert want in " ".join(README.read_text().split())
    assert abs(kn["accuracy"] - nin["float32_accuracy"]) <= 0.5 and pn["float32_accuracy"] - kp["accuracy"] <= 0.5


def test_the_xeon_int8_accuracies_are_their_run():
    """The results page's Xeon bullet: ``benchmarks/int8_accuracy_xeon.json``'s float32 and kept accuracies."""
    run = json.loads((README.parent / "benchmarks" / "int8_accuracy_xeon.json").read_text())["runs"]
    nin, pn = run["nin_digits on digits"], run["pointnet_cls on shapes3d (256 points)"]
    text = " ".join(RESULTS.read_text().split())
    assert f"`nin_digits` {nin['float32_accuracy']:.2f}% in float32 and in every int8 form" in text
    assert {round(f["accuracy"], 2) for f in nin["forms"].values() if "accuracy" in f} == {
        round(nin["float32_accuracy"], 2)}
    chains = [f for k, f in pn["forms"].items() if k.startswith("onebyone")]
    assert f"`pointnet_cls` {pn['float32_accuracy']:.2f}% in float32 and in both chain forms" in text
    assert len(chains) == 2 and all(f"{f['accuracy']:.2f}" == f"{pn['float32_accuracy']:.2f}" for f in chains)
    assert all(f"{f['agreement']:.2f}" == "100.00" for f in chains) and "agreeing on 100.00%" in text


def test_the_vanilla_pointnet_int8_accuracy_is_its_run():
    """The results page's ``pointnet_vanilla`` sentence: ``benchmarks/int8_accuracy_vanilla_xeon.json``'s run."""
    run = json.loads((README.parent / "benchmarks" / "int8_accuracy_vanilla_xeon.json").read_text())["runs"]
    pn = run["pointnet_vanilla on shapes3d (256 points)"]
    kept = pn["forms"][pn["kept"]]
    text = " ".join(RESULTS.read_text().split())
    assert (f"{pn['float32_accuracy']:.2f}% in float32, {kept['accuracy']:.2f}% kept in int8 (our chains, agreeing "
            f"on {kept['agreement']:.2f}%)") in text and pn["kept"].startswith("onebyone")
    worst = max(abs(f["accuracy"] - pn["float32_accuracy"]) for f in pn["forms"].values() if f.get("accuracy"))
    assert f"every form within {worst:.2f} points of float32" in text and worst <= 0.5
