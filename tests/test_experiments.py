"""The tour's experiments in Chromium, driven with real mouse and keyboard events: every number a page
computes in JavaScript equals NumPy's on the same arrays (float32-level, <= 1e-5 relative). Screenshots
before and after each interaction go to artifacts/; each interaction must redraw its experiment."""
import contextlib
import json

import numpy as np
import pytest

from onebyone import cost, ops

from .test_browser import Visit, browser  # noqa: F401  (the fixture)


def state(page, lesson):
    return page.evaluate(f"JSON.parse(JSON.stringify(window.onebyone[{json.dumps(lesson)}], "
                         "(k, v) => typeof v === 'bigint' ? v.toString() : v))")


def close(a, b, rel=1e-5):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and np.abs(a - b).max() <= rel * max(1.0, np.abs(b).max())


@contextlib.contextmanager
def experiment(visit, name, interacts=True):
    """The page scrolled to experiment ``name``: a screenshot before and after the interaction in the
    ``with`` block; the interaction must have redrawn it (the page stamps each redraw's time on it)."""
    page, shot = visit.page, f"exp_{name.replace('-', '_')}"
    page.locator(f"#exp-{name}").scroll_into_view_if_needed()
    visit.screenshot(f"{shot}_before.png", f"#exp-{name}")
    page.eval_on_selector(f"#exp-{name}", "el => { delete el.dataset.redrawMs; }")
    yield page
    if interacts:
        drawn = page.get_attribute(f"#exp-{name}", "data-redraw-ms")
        assert drawn is not None, f"the interaction with {name} drew nothing"
    visit.screenshot(f"{shot}_after.png", f"#exp-{name}")


@pytest.fixture
def visit(browser, tour_page):  # noqa: F811
    v = Visit(browser, tour_page)
    yield v
    v.check_clean()


def test_one_channel_stays_a_straight_line_until_a_second_channel(visit):
    with experiment(visit, "one-channel") as page:
        page.focus("#oc-w")
        for _ in range(7):
            page.keyboard.press("ArrowLeft")  # 0.8 - 7 x 0.05 = 0.45
        box = page.locator("#oc-b").bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.25, box["y"] + box["height"] / 2)  # the bias slider, by mouse
        s = state(page, "one-channel")
        x = np.asarray(s["x"])
        assert s["w"] == pytest.approx(0.45) and s["b"] != 0.1
        want = ops.conv1x1(x[None, None], np.array([[s["w"]]]), np.array([s["b"]]))[0, 0]  # (28, 28)
        assert close(s["y"], want.ravel())
        assert s["offLine"] < 1e-9 and s["slope"] == pytest.approx(s["w"])  # a rescaled copy: one straight line
        page.check("#oc-second")
        s = state(page, "one-channel")
        two = ops.conv1x1(np.stack([x, np.asarray(s["x2"])])[None], np.array([[s["w"], 0.7]]), np.array([s["b"]]))
        assert close(s["y"], two[0, 0].ravel()) and s["offLine"] > 0.05  # the line breaks


def test_two_layers_without_relu_are_one_matrix_and_with_it_are_not(visit):
    with experiment(visit, "nonlinearity") as page:
        s = state(page, "nonlinearity")
        X, W1, W2 = (np.asarray(s[k]) for k in ("X", "W1", "W2"))
        assert close(s["merged"], W2 @ W1) and close(s["Y"], W2 @ W1 @ X) and s["mergedGap"] < 1e-9
        page.focus("#nl-relu")
        page.keyboard.press("Space")
        s = state(page, "nonlinearity")
        Y = W2 @ np.maximum(W1 @ X, 0)
        fit = np.linalg.lstsq(X.T, Y.T, rcond=None)[0].T  # the best M with Y ~ M X
        assert s["relu"] and close(s["Y"], Y) and close(s["fit"], fit, 1e-6)
        assert s["fitResidual"] == pytest.approx(np.abs(Y - fit @ X).max(), rel=1e-6) and s["fitResidual"] > 0.1


def test_the_bottleneck_sliders_count_as_cost_does(visit):
    with experiment(visit, "bottleneck") as page:
        for slider, presses in (("#bn-cin", 40), ("#bn-r", -5), ("#bn-cout", 9), ("#bn-k", -2)):
            page.focus(slider)
            for _ in range(abs(presses)):
                page.keyboard.press("ArrowRight" if presses > 0 else "ArrowLeft")
            s = state(page, "bottleneck")
            cin, r, cout, k = (int(s[n]) for n in ("cin", "r", "cout", "k"))
            direct = cost.conv_cost((1, cin, 28, 28), cout, k, padding="same")
            pair = [cost.conv1x1_cost((1, cin, 28, 28), r), cost.conv_cost((1, r, 28, 28), cout, k, padding="same")]
            assert (int(s["direct"]["macs"]), int(s["direct"]["params"])) == (direct.macs, direct.params)
            assert (int(s["pair"]["macs"]), int(s["pair"]["params"])) == (sum(c.macs for c in pair),
                                                                          sum(c.params for c in pair))
            assert s["ratio"] == pytest.approx(direct.macs / sum(c.macs for c in pair), rel=1e-12)
        assert (cin, r, cout, k) == (232, 11, 41, 3)
        assert page.inner_text("#bn-k-value") == "3"  # the labelled value follows the slider


def test_a_dense_layer_at_the_pixel_under_the_mouse_and_shared_weights(visit):
    with experiment(visit, "many-channels") as page:
        box = page.locator("#mc-in").bounding_box()
        page.mouse.move(box["x"] + box["width"] * (11.5 / 16), box["y"] + box["height"] * (2.5 / 16))  # pixel (2, 11)
        s = state(page, "many-channels")
        x, b, w = np.asarray(s["x"]), np.asarray(s["b"]), np.asarray(s["w"])
        assert s["pixel"] == [2, 11] and close(s["column"], x[:, 2, 11])
        assert close(s["product"], w @ x[:, 2, 11] + b)
        page.focus("#mc-in")
        page.keyboard.press("ArrowDown")
        assert state(page, "many-channels")["pixel"] == [3, 11]
        page.fill("#mc-w-4-1", "2.5")  # one weight cell: every pixel of output 4 changes with it
        s = state(page, "many-channels")
        w2 = np.asarray(s["w"])
        assert w2[4, 1] == 2.5 and close(s["y"], ops.conv1x1(x[None], w2, b)[0])


def test_the_weight_table_is_labelled_its_fields_show_their_values_and_the_maps_are_captioned(visit):
    with experiment(visit, "many-channels", interacts=False) as page:  # it reads the labels only
        page.set_viewport_size({"width": 1280, "height": 900})
        table = page.locator("#exp-many-channels .exp-matrix")
        assert table.locator("thead, tr").first.inner_text().split() == ["in", "0", "in", "1", "in", "2"]
        assert [t.strip() for t in table.locator("th[scope=row]").all_inner_texts()] == [f"out {o}" for o in range(8)]
        assert "a row per output channel" in table.locator("caption").inner_text()
        clipped = page.evaluate("""() => Array.from(document.querySelectorAll('#exp-many-channels .exp-matrix input'))
            .filter((i) => i.scrollWidth > i.clientWidth).map((i) => i.id + '=' + i.value)""")
        assert clipped == []  # every value shows whole ("-2.791", not "-2.79")
        captions = page.locator("#exp-many-channels figure.exp-map figcaption").all_inner_texts()
        assert captions == [f"out {o}" for o in range(8)]


def test_three_branches_sum_to_one_kernel_as_the_sliders_move(visit):
    from onebyone import reparam

    with experiment(visit, "branches") as page:
        for slider, presses in (("#br-a", -7), ("#br-b", 4), ("#br-c", -13)):
            page.focus(slider)
            for _ in range(abs(presses)):
                page.keyboard.press("ArrowRight" if presses > 0 else "ArrowLeft")
        s = state(page, "branches")
        a, b, c = s["a"], s["b"], s["c"]
        assert (round(a, 1), round(b, 1), round(c, 1)) == (0.3, 1.4, -0.3)
        x, k3, k1 = np.asarray(s["x"]), np.asarray(s["k3"]), s["k1"]
        kernel, _ = reparam.merge([a * k3[None, None], np.full((1, 1, 1, 1), b * k1), c * reparam.identity_kernel(1)],
                                  [0.0, 0.0, 0.0], (3, 3))  # NumPy's merge of the same scaled branches
        assert close(s["merged"], kernel[0, 0])
        assert close(s["y"], ops.conv2d(x[None, None], kernel, padding=1)[0, 0])  # one conv, as NumPy runs it
        assert close(s["branchSum"], ops.conv2d(x[None, None], a * k3[None, None], padding=1)[0, 0] + (b * k1 + c) * x)
        assert s["diff"] < 1e-9


def test_a_dense_unit_is_a_full_kernel_and_a_deep_1x1_filter(visit):
    from onebyone import forms

    with experiment(visit, "fc-as-conv") as page:
        page.focus("#fc-unit")
        for _ in range(3):
            page.keyboard.press("ArrowRight")
        s = state(page, "fc-as-conv")
        x, w, b, k = np.asarray(s["x"]), np.asarray(s["w"]), np.asarray(s["b"]), s["unit"]
        assert k == 3
        dense = ops.dense(x.reshape(1, 784), w, b)[0, k]
        full = ops.conv2d(x[None, None], forms.dense_to_full_kernel(w, (1, 28, 28)), b)[0, k, 0, 0]
        deep = ops.conv1x1(forms.flatten_to_pixel(x[None, None]), forms.dense_to_conv1x1(w), b)[0, k, 0, 0]
        assert close(s["dense"], dense) and close(s["full"], full) and close(s["pointwise"], deep)


def test_the_shared_mlp_global_feature_ignores_the_order_of_the_points(visit):
    from onebyone import forms

    with experiment(visit, "shared-mlp") as page:
        before = state(page, "shared-mlp")
        pts = np.asarray(before["points"])
        layers = [(np.asarray(before["W1"]), np.asarray(before["b1"])),
                  (np.asarray(before["W2"]), np.asarray(before["b2"]))]
        want = forms.shared_mlp_per_point(pts[None], layers)[0]  # (N, 128)
        assert close(before["features"], want) and close(before["pooled"], want.max(axis=0))
        page.click("#sm-shuffle")
        page.focus("#sm-angle")
        page.keyboard.press("ArrowRight")
        after = state(page, "shared-mlp")
        order = np.asarray(after["order"])
        assert after["shuffles"] == 1 and not np.array_equal(order, np.arange(len(pts)))
        assert close(after["features"], want[order]) and close(after["pooled"], before["pooled"], 1e-12)


def test_draw_a_digit_and_the_maps_average_to_the_scores(visit):
    from onebyone.tour.digits import DigitsModel, patches

    with experiment(visit, "class-maps") as page:
        page.click("#cm-clear")
        box = page.locator("#cm-draw").bounding_box()
        cell = lambda i, j: (box["x"] + (j + 0.5) * box["width"] / 8, box["y"] + (i + 0.5) * box["height"] / 8)  # noqa: E731
        page.mouse.move(*cell(1, 4))
        page.mouse.down()
        for i in range(1, 7):  # a vertical stroke: a one
            page.mouse.move(*cell(i, 4), steps=3)
        page.mouse.up()
        page.focus("#cm-draw")
        page.keyboard.press("Space")  # the keyboard cursor inks its cell too
        s = state(page, "class-maps")
        image = np.asarray(s["image"], dtype=np.float64)
        assert image[1:7, 4].sum() == 6 and image[3, 3] == 1
        model = DigitsModel([np.asarray(s[k], dtype=np.float64) for k in ("W1", "b1", "W2", "b2", "W3", "b3")])
        maps = model.maps(patches(image[None, None]).astype(np.float64))[0]  # (8, 8, 10)
        assert close(np.moveaxis(np.asarray(s["maps"]), 0, -1), maps)
        assert close(s["scores"], maps.mean(axis=(0, 1)))  # the score is the spatial mean of its class map
        page.check("#cm-wide")
        box = page.locator("#cm-draw").bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.75, box["y"] + box["height"] * 0.3)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.75, box["y"] + box["height"] * 0.8, steps=6)
        page.mouse.up()
        s = state(page, "class-maps")
        wide = np.asarray(s["image"], dtype=np.float64)
        assert wide.shape == (8, 16) and wide[:, 12].sum() >= 3
        maps = model.maps(patches(wide[None, None]).astype(np.float64))[0]
        assert close(np.moveaxis(np.asarray(s["maps"]), 0, -1), maps) and close(s["scores"], maps.mean(axis=(0, 1)))


def test_the_report_table_sorts_filters_and_shows_its_arithmetic(browser, tmp_path):  # noqa: F811
    from onebyone import analyze
    from onebyone.cli import main
    from onebyone.zoo import create_model

    assert main(["report", "squeezenet1_1", "--html", str(tmp_path)]) == 0
    stats = analyze(create_model("squeezenet1_1"), (3, 224, 224))
    v = Visit(browser, tmp_path / "index.html")
    page = v.page
    visible = lambda: page.evaluate("window.onebyone.report.visible()")  # noqa: E731
    assert visible() == [r.name for r in stats.rows]
    column = lambda: [int(t.replace(",", "")) for t in page.eval_on_selector_all(  # noqa: E731
        "#layer-table tbody tr:not([hidden]) td:nth-child(7)", "tds => tds.map(td => td.textContent)")]
    page.click("#layer-table thead th:nth-child(7) button")  # MACs: the largest first
    assert column() == sorted((r.macs for r in stats.rows), reverse=True)
    page.click("#layer-table thead th:nth-child(7) button")  # again: the smallest first
    assert column() == sorted(r.macs for r in stats.rows)
    page.select_option("#layer-kind", "pointwise")
    assert set(visible()) == {r.name for r in stats.rows if r.kind == "pointwise"}
    page.select_option("#layer-kind", "")
    page.fill("#layer-name", "fire3")
    assert set(visible()) == {r.name for r in stats.rows if "fire3" in r.name}
    page.fill("#layer-name", "")
    page.click("#kind-bars button[data-kind='conv']")  # a kind in the chart filters the table to it
    assert set(visible()) == {r.name for r in stats.rows if r.kind == "conv"}
    row = next(r for r in stats.rows if r.kind == "conv")
    details = page.locator(f"#layer-table tr[data-name='{row.name}'] details")
    details.locator("summary").click()
    text = details.inner_text()
    assert f"= {row.macs:,}" in text and f"= {row.params:,}" in text and f"{2 * row.macs:,}" in text
    v.screenshot("report_table_filtered.png")
    v.check_clean()


def test_a_conv_rows_arithmetic_names_its_channels_and_kernel():
    from onebyone import analyze
    from onebyone.model_page import how
    from onebyone.zoo import create_model

    stats = analyze(create_model("squeezenet1_1"), (3, 224, 224))
    row = stats.rows[0]  # the 3x3 stem conv, 3 -> 64 channels, stride 2
    per = 3 * 3 * 3
    assert row.per_output == f"3/1 input channels x a 3x3 kernel = {per} MACs"
    assert how(row).startswith(f"MACs = {row.activations:,} output values x ({row.per_output}) = {row.macs:,}")
    assert row.activations * per == row.macs


def test_the_int8_sliders_run_the_integer_product_numpy_runs(visit):
    from onebyone.quant import pointwise_int
    from onebyone.tour import run_tour

    lesson = run_tour(only=["int8"])[0].arrays  # the page was made with seed 0, as this run is
    a = {k: np.round(np.asarray(lesson[k], dtype=np.float64), 6) for k in ("x", "w", "b", "exact")}  # as embedded
    with experiment(visit, "int8") as page:
        for bits_presses, uncheck in ((0, False), (-1, False), (-1, True)):  # 8, 6, then 4 bits with one scale
            page.focus("#q8-bits")
            for _ in range(-bits_presses):
                page.keyboard.press("ArrowLeft")
            if uncheck:
                page.click("#q8-per-channel")
            s = state(page, "int8")
            want = pointwise_int(a["x"][None], a["w"], a["b"], s["bits"], s["perChannel"])["y"][0]
            assert close(s["y"], want, rel=1e-9)
            err = np.abs(want - a["exact"]).max() / np.abs(a["exact"]).max()
            assert s["error"] == pytest.approx(err, rel=1e-9)
        assert (s["bits"], s["perChannel"]) == (4, False) and s["error"] > 0.05
        assert "4 bits, one scale for all weights" in page.inner_text("#q8-readout")
