"""The tour's experiments in Chromium, driven with real mouse and keyboard events: every number a page
computes in JavaScript equals NumPy's on the same arrays (float32-level, <= 1e-5 relative). Screenshots
before and after each interaction go to artifacts/; each redraw's time is printed, not asserted."""
import json

import numpy as np
import pytest

from onebyone import cost, ops

from .test_browser import Visit, browser  # noqa: F401  (the fixture)

REDRAWS = {}


def state(page, lesson):
    return page.evaluate(f"JSON.parse(JSON.stringify(window.onebyone[{json.dumps(lesson)}], "
                         "(k, v) => typeof v === 'bigint' ? v.toString() : v))")


def redraw_ms(page, element):
    return float(page.get_attribute(element, "data-redraw-ms"))


def close(a, b, rel=1e-5):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and np.abs(a - b).max() <= rel * max(1.0, np.abs(b).max())


@pytest.fixture
def visit(browser, tour_page):  # noqa: F811
    v = Visit(browser, tour_page)
    yield v
    v.check_clean()


def test_one_channel_stays_a_straight_line_until_a_second_channel(visit):
    page = visit.page
    page.locator("#exp-one-channel").scroll_into_view_if_needed()
    visit.screenshot("exp_one_channel_before.png")
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
    REDRAWS["one-channel"] = redraw_ms(page, "#exp-one-channel")
    visit.screenshot("exp_one_channel_after.png")


def test_two_layers_without_relu_are_one_matrix_and_with_it_are_not(visit):
    page = visit.page
    page.locator("#exp-nonlinearity").scroll_into_view_if_needed()
    visit.screenshot("exp_nonlinearity_before.png")
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
    REDRAWS["nonlinearity"] = redraw_ms(page, "#exp-nonlinearity")
    visit.screenshot("exp_nonlinearity_after.png")


def test_the_bottleneck_sliders_count_as_cost_does(visit):
    page = visit.page
    page.locator("#exp-bottleneck").scroll_into_view_if_needed()
    visit.screenshot("exp_bottleneck_before.png")
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
    REDRAWS["bottleneck"] = redraw_ms(page, "#exp-bottleneck")
    visit.screenshot("exp_bottleneck_after.png")


def test_report_redraw_times():
    print("redraw milliseconds, last interaction:", REDRAWS)  # measured and reported, not asserted
