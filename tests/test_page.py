"""The HTML pages without a browser: structure, figures, self-containment, the report's numbers, errors."""
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onebyone import OneByOneError
from onebyone.cli import main
from onebyone.tour import core, lesson_ids
from onebyone.tour.tour_page import draw, write_tour


def _sections(text):
    return re.findall(r'<section class="card lesson" id="([^"]+)" data-pass="(true|false)"', text)


def test_tour_page_has_a_section_figure_and_pass_per_lesson(tour_page):
    text = tour_page.read_text()
    assert [(i, "true") for i in lesson_ids()] == _sections(text)
    assert all(spec.figure is not None for spec in core.REGISTRY)  # every lesson declares a figure
    for lid in lesson_ids():
        with Image.open(tour_page.parent / "figures" / f"{lid}.png") as im:
            assert im.width > 300 and im.height > 150
    assert f"{len(lesson_ids())}/{len(lesson_ids())} lessons pass" in text


def test_pages_load_nothing_from_outside(tour_page):
    text = tour_page.read_text()
    srcs = re.findall(r'(?:src|href)="([^"]+)"', text)
    assert srcs and all(s.startswith(("figures/", "#")) for s in srcs), srcs
    assert not re.search(r"@import|url\(|<link|https?://", text)
    assert "<style>" in text and "<script>" in text  # CSS and JS are inline


def test_a_failing_lesson_is_shown_as_failed(tmp_path):
    L = core.Lesson("broken", "A broken lesson", "a claim", "nowhere")
    L.equal("three is four", 3, 4)
    path = write_tour([L], tmp_path)
    text = path.read_text()
    assert _sections(text) == [("broken", "false")]
    assert 'class="badge fail">FAIL' in text and "0/1 lessons pass" in text
    assert not (tmp_path / "figures").exists()  # nothing kept, nothing drawn


def test_figures_refuse_what_they_cannot_draw(tmp_path):
    with pytest.raises(OneByOneError, match="no figure for lesson 'nope'"):
        draw(core.Lesson("nope", "t", "c", "s"), tmp_path / "x.png")
    with pytest.raises(OneByOneError, match="kept no arrays"):
        draw(core.Lesson("shapes", "t", "c", "s"), tmp_path / "x.png")


def test_lessons_keep_the_arrays_they_verified(tour_lessons):
    by_id = {L.id: L for L in tour_lessons}
    a = by_id["one-channel"].arrays
    np.testing.assert_allclose(a["y"], a["x"][..., None] * a["alpha"] + a["b"], atol=1e-12)  # what the figure shows
    b = by_id["bottleneck"].arrays
    assert (b["direct"], b["reduce"] + b["after"]) == (120_422_400, 12_443_648)
    fc = by_id["fc-as-conv"].arrays
    np.testing.assert_allclose(fc["full"], fc["dense"], atol=1e-10)
    maps = by_id["class-maps"].arrays
    assert (
        maps["maps"].shape == (10, 8, 8) and maps["accuracy"] > 0.9 and int(np.argmax(maps["probs"])) == maps["label"]
    )


def test_report_numbers_come_from_the_analyzer(tmp_path, capsys):
    pytest.importorskip("torch")
    from onebyone.analyzer import analyze
    from onebyone.model_page import by_kind, dominating
    from onebyone.zoo import create_model

    stats = analyze(create_model("squeezenet1_1"), input_size=(3, 224, 224))
    kinds = by_kind(stats)
    assert sum(v["macs"] for v in kinds.values()) == stats.macs  # rows add up to the totals
    assert kinds["pointwise"]["macs_pct"] == stats.share()["pointwise"]["macs"]
    top = dominating(stats)
    assert [r.macs for r, _, _ in top] == sorted((r.macs for r in stats.rows), reverse=True)[:10]
    assert top[-1][2] == pytest.approx(sum(p for _, p, _ in top))

    assert main(["report", "squeezenet1_1", "--html", str(tmp_path)]) == 0
    text = (tmp_path / "index.html").read_text()
    assert f"{stats.macs:,} MACs" in text and stats.footer() in text
    assert text.count('<tr class="pointwise"') >= sum(r.kind == "pointwise" for r in stats.rows)
    assert (tmp_path / "figures" / "kinds.png").stat().st_size > 0
    assert not (tmp_path / "figures" / "roofline.png").exists()  # no bench JSON, no roofline


def test_report_with_a_bench_json_draws_the_roofline(tmp_path):
    pytest.importorskip("torch")
    bench = {
        "machine": "test machine",
        "peak_gflops": 200.0,
        "bandwidth_gbs": 10.0,
        "pointwise_op": [
            {"roofline": [{"name": "pointwise 64->64 cl", "intensity": 8.0, "gflops": 60.0, "section": "a"}]}
        ],
    }
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    assert main(["report", "nin_digits", "--html", str(tmp_path / "out"), "--bench", str(tmp_path / "bench.json")]) == 0
    assert 'id="roofline"' in (tmp_path / "out" / "index.html").read_text()
    with Image.open(tmp_path / "out" / "figures" / "roofline.png") as im:
        assert im.width > 300
    (tmp_path / "out" / "figures" / "mine.png").write_bytes(b"mine")  # a file of the user's among the figures
    assert main(["report", "nin_digits", "--html", str(tmp_path / "out")]) == 0  # again, without the bench
    figures = tmp_path / "out" / "figures"
    assert not (figures / "roofline.png").exists()  # the page before's figure this one does not show: removed
    assert (figures / "kinds.png").is_file() and (figures / "mine.png").read_bytes() == b"mine"


def test_report_bad_input_is_a_clear_error(tmp_path, capsys):
    pytest.importorskip("torch")
    (tmp_path / "bad.json").write_text("{}")
    assert main(["report", "nin_digits", "--html", str(tmp_path / "page"), "--bench", str(tmp_path / "bad.json")]) == 2
    assert "expects the JSON object written by `onebyone bench --json`" in capsys.readouterr().err
    page, missing = str(tmp_path / "page"), str(tmp_path / "missing.json")
    assert main(["report", "nin_digits", "--html", page, "--bench", missing]) == 2
    assert "missing.json" in capsys.readouterr().err
    assert main(["report", "no_such_model", "--html", str(tmp_path / "page")]) == 2
    assert "nin_digits" in capsys.readouterr().err  # the error lists the zoo


def test_cli_tour_html_prints_the_lessons_and_writes_the_page(tmp_path, capsys):
    assert main(["tour", "--lesson", "bottleneck", "--html", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1/1 lessons pass" in out and f"wrote {tmp_path / 'index.html'}" in out
    assert _sections((tmp_path / "index.html").read_text()) == [("bottleneck", "true")]
    assert [p.name for p in (tmp_path / "figures").iterdir()] == ["bottleneck.png"]


def test_report_takes_a_factory_and_an_input_size(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    (tmp_path / "my_models.py").write_text(
        "from torch import nn\n"
        "def make():\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["report", "my_models:make", "--input-size", "3", "16", "16", "--html", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "index.html").read_text()
    macs = 8 * 14 * 14 * 27 + 4 * 14 * 14 * 8  # the 3x3 conv and the 1x1 conv at 16 x 16, closed form
    assert f"{macs:,} MACs" in text and "<h1>Sequential</h1>" in text


def test_the_roofline_draws_the_measured_int8_roof_beside_the_float32_one(tmp_path, monkeypatch):
    from onebyone import plots

    seen = {}
    monkeypatch.setattr(plots, "save", lambda fig, path: seen.setdefault("fig", fig) and Path(path))
    points = [{"name": "pointwise 64->64 cl", "intensity": 8.0, "gflops": 60.0, "section": "a"}]
    base = {"machine": "m", "peak_gflops": 200.0, "bandwidth_gbs": 10.0, "pointwise_op": [{"roofline": points}]}
    for extra, roofs in (({}, 1), ({"peak_gops_int8": 370.0}, 2)):
        seen.clear()
        plots.bench_roofline(base | extra, tmp_path / "r.png")
        labels = seen["fig"].axes[0].get_legend_handles_labels()[1]
        assert sum("roof" in label for label in labels) == roofs
    assert "int8 roof: 370 GOP/s (torch's quantized 1x1 conv)" in labels
    (tmp_path / "bad.json").write_text(json.dumps(base | {"peak_gops_int8": "fast"}))
    with pytest.raises(plots.OneByOneError, match="peak_gops_int8 must be a number > 0, got 'fast'"):
        plots.read_bench(tmp_path / "bad.json")


def test_a_bench_json_with_no_roofline_point_is_refused_before_any_page_is_written(tmp_path, capsys):
    """`bench --sections c --json` holds no roofline point: `report --bench` refuses it at once, naming the
    sections to run (it once built the model, wrote part of the folder, then stopped on the figure)."""
    bench = tmp_path / "c.json"
    bench.write_text(json.dumps({"machine": "x", "peak_gflops": 100, "bandwidth_gbs": 10, "dense_prediction": {}}))
    assert main(["report", "nin_digits", "--bench", str(bench), "--html", str(tmp_path / "page")]) == 2
    assert "holds no roofline point (sections a and b measure them)" in capsys.readouterr().err
    assert not (tmp_path / "page" / "figures").exists() and not (tmp_path / "page" / "index.html").exists()


def test_a_command_that_fails_leaves_no_folder_behind(tmp_path, capsys, monkeypatch):
    """The output folder is checked, not made, before the work: a refused command leaves nothing (once the
    three folders of brand/new/dir stayed behind an unknown model's error)."""
    monkeypatch.chdir(tmp_path)
    assert main(["report", "nosuch", "--html", "brand/new/dir"]) == 2
    assert main(["tour", "--lesson", "nope", "--html", "t_new"]) == 2
    assert main(["train", "nosuch", "--data", "digits", "--out", "runs/new"]) == 2
    capsys.readouterr()
    assert list(tmp_path.iterdir()) == []


def test_a_model_with_no_products_says_so_instead_of_listing_zero_layers(tmp_path):
    """A model of a ReLU alone read "The 0 layers with the most MACs" over an empty table."""
    pytest.importorskip("torch")
    from torch import nn

    from onebyone.analyzer import analyze
    from onebyone.model_page import write_report

    write_report(analyze(nn.Sequential(nn.ReLU()), input_size=(3, 8, 8)), tmp_path / "relu")
    text = (tmp_path / "relu" / "index.html").read_text()
    assert "No layer of this model multiplies: it has no MACs." in text and "The 0 layers" not in text
    write_report(analyze(nn.Sequential(nn.Conv2d(3, 4, 1)), input_size=(3, 8, 8)), tmp_path / "one")
    assert "The 1 layer with the most MACs" in (tmp_path / "one" / "index.html").read_text()


def test_the_layer_tables_shape_columns_sort_by_size():
    """The page sorts by each cell's data-sort as text: shapes keyed as "(1, 1024, 7, 7)" came before
    "(1, 32, 112, 112)". Their keys are now element counts that sort as text in size order."""
    import re

    pytest.importorskip("torch")
    from onebyone.analyzer import analyze
    from onebyone.model_page import by_kind, layer_table
    from onebyone.zoo import create_model

    stats = analyze(create_model("mobilenet_v1"), input_size=(3, 224, 224))
    html = layer_table(stats, by_kind(stats))
    keys = [re.findall(r'data-sort="([^"]*)"', row)[4] for row in html.split("<tr")[2:]]  # the output column
    sizes = [math.prod(r.output_shape) if r.output_shape else 0 for r in stats.rows]
    assert [sizes[i] for i in sorted(range(len(keys)), key=keys.__getitem__)] == sorted(sizes)
