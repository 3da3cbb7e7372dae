"""The pages in a real browser: Debian's chromium driven by Playwright (no browser download).

`make test` installs chromium with apt-get where it can; these tests skip, saying why, only where it
is missing. Screenshots go to ``artifacts/`` at the repository root (or $ONEBYONE_ARTIFACTS).
"""
import os
import shutil
from pathlib import Path

import pytest

from onebyone import OneByOneError, cost
from onebyone.tour import lesson_ids

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]
ARTIFACTS = Path(os.environ.get("ONEBYONE_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts"))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed (Debian package 'chromium'; `make test` installs it with apt-get "
                    "when it runs as root or with passwordless sudo)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is missing: pip install -e '.[dev]'"
    )
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)  # headless, with a new empty profile
        yield b
        b.close()


class Visit:
    """A page opened from disk, recording console errors, page errors and every non-file request."""

    def __init__(self, browser, path: Path):
        self.context = browser.new_context(viewport={"width": 1200, "height": 900})
        self.page = self.context.new_page()
        self.errors, self.outside = [], []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: r.url.startswith(("file:", "data:")) or self.outside.append(r.url))
        self.context.route(lambda url: not url.startswith(("file:", "data:")), lambda route: route.abort())
        self.page.goto(path.resolve().as_uri(), wait_until="load")
        self.page.wait_for_load_state("networkidle")  # let late requests and console messages arrive
        self.page.evaluate("0")  # a round trip: events sent before it are delivered by now

    def images(self) -> list:
        return self.page.eval_on_selector_all(
            "img", "els => els.map(e => [e.getAttribute('src'), e.complete, e.naturalWidth, e.naturalHeight])"
        )

    def check_clean(self):
        assert self.errors == [], self.errors
        assert self.outside == [], self.outside
        imgs = self.images()
        assert imgs and all(done and w > 0 and h > 0 for _, done, w, h in imgs), imgs

    def screenshot(self, name: str, selector: str | None = None) -> Path:
        """The whole page, or the element ``selector`` names, as artifacts/``name``."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        if selector:
            self.page.locator(selector).screenshot(path=str(path))
        else:
            self.page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000
        return path


def test_tour_page_in_a_browser(browser, tour_page):
    v = Visit(browser, tour_page)
    v.check_clean()
    assert len(v.images()) == len(lesson_ids())
    badges = v.page.eval_on_selector_all(
        "section.lesson", "els => els.map(e => [e.id, e.querySelector('h2 .badge').textContent])"
    )
    assert badges == [[i, "PASS"] for i in lesson_ids()]
    assert v.page.locator("section.lesson .badge.fail").count() == 0
    v.screenshot("tour.png")


def test_the_visit_catches_network_requests_and_errors(browser, tmp_path):
    page = tmp_path / "leaky.html"
    page.write_text('<img src="https://example.invalid/a.png"><script>console.error("bad"); undefinedCall();</script>')
    v = Visit(browser, page)
    assert v.outside == ["https://example.invalid/a.png"]
    assert any("bad" in e for e in v.errors) and any("undefinedCall" in e for e in v.errors)  # in any order
    with pytest.raises(AssertionError):
        v.check_clean()


def test_report_page_in_a_browser(browser, tmp_path):
    pytest.importorskip("torch")
    from onebyone.cli import main

    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.json"
    assert main(["report", "mobilenet_v1", "--html", str(tmp_path), "--bench", str(bench)]) == 0
    v = Visit(browser, tmp_path / "index.html")
    v.check_clean()
    assert [i[0] for i in v.images()] == ["figures/kinds.png", "figures/roofline.png"]
    assert "1x1 convolutions:" in v.page.inner_text("header")
    v.screenshot("report_mobilenet_v1.png")


CASES = [  # H, W, C_in, C_out, kernel, stride, padding, groups
    (28, 28, 192, 32, 5, 1, "same", 1),    # the tour's 5x5 conv: 120,422,400 MACs
    (28, 28, 192, 16, 1, 1, "0", 1),       # its 1x1 bottleneck
    (6, 6, 3, 2, 3, 1, "valid", 1),        # the 56-parameter example
    (224, 224, 3, 64, 7, 2, "3", 1),       # a ResNet stem: stride and padding
    (56, 56, 64, 64, 3, 2, "same", 64),    # depthwise, strided, 'same' with an odd split
    (14, 15, 32, 64, 3, 2, "1", 4),        # grouped, non-square, strided
    (7, 7, 512, 1000, 7, 1, "valid", 1),   # a full-kernel classifier
    (9, 9, 6, 9, 4, 3, "2", 3),            # even kernel, stride 3
    (4096, 4096, 2048, 2048, 11, 1, "same", 1),  # MACs past 2**53: exact only with BigInt
]


def _fill(page, case):
    for key, value in zip(("h", "w", "cin", "cout", "k", "s", "p", "g"), case):
        page.fill(f"#calc-{key}", str(value))


def test_calculator_agrees_with_cost(browser, tour_page):
    v = Visit(browser, tour_page)
    for case in CASES:
        h, w, cin, cout, k, s, p, g = case
        _fill(v.page, case)
        got = {key: v.page.get_attribute(f"#calc-{key}", "data-value") for key in ("shape", "params", "macs", "flops")}
        want = cost.conv_cost(
            (1, cin, h, w), cout, k, stride=s, padding=p if p in ("same", "valid") else int(p), groups=g
        )
        assert got == {"shape": " x ".join(map(str, want.output_shape)), "params": str(want.params),
                       "macs": str(want.macs), "flops": str(want.flops)}, case
        assert v.page.inner_text("#calc-error") == ""
        assert v.page.inner_text("#calc-macs") == f"{want.macs:,}"  # shown with thousands separators
    v.check_clean()


@pytest.mark.parametrize("case, message", [
    ((28, 28, 30, 32, 3, 1, "1", 4), "must divide both"),   # groups that do not divide C_in
    ((5, 5, 3, 8, 7, 1, "0", 1), "larger than the padded input"),
    ((8, 8, 3, 8, 3, 0, "0", 1), "stride"),                   # stride 0
    ((8, 8, 3, 8, 3, 1, "half", 1), "padding"),
])
def test_calculator_refuses_what_cost_refuses(browser, tour_page, case, message):
    h, w, cin, cout, k, s, p, g = case
    with pytest.raises(OneByOneError):
        cost.conv_cost((1, cin, h, w), cout, k, stride=s, padding=p if not p.isdigit() else int(p), groups=g)
    v = Visit(browser, tour_page)
    _fill(v.page, case)
    assert message in v.page.inner_text("#calc-error")
    assert v.page.get_attribute("#calc-macs", "data-value") == ""
    v.check_clean()


def _formula_cases() -> list:
    """(H, W, C_in, C_out, kernel, stride, padding, groups) over a grid of shapes, kernels, strides, paddings and
    groups, with cases that ``conv_cost`` refuses (groups that do not divide, a kernel past the padded input, a
    padding it does not know). Dilation is not among them: the page's formula has none (dilation 1)."""
    import itertools

    spatial = [(1, 1), (5, 7), (13, 8), (28, 28), (224, 224)]
    channels = [(3, 8, 1), (16, 32, 4), (32, 32, 32), (6, 9, 3), (30, 32, 4)]  # (C_in, C_out, groups)
    grid = itertools.product(spatial, channels, (1, 2, 3, 7), (1, 2, 3), ("valid", "same", "0", "1", "3"))
    cases = [(h, w, cin, cout, k, s, p, g) for (h, w), (cin, cout, g), k, s, p in grid]
    return cases + [(8, 8, 3, 8, 3, 1, "half", 1), (4096, 4096, 2048, 2048, 11, 1, "same", 1)]  # BigInt past 2**53


def test_the_pages_conv_formula_is_cost_conv_cost(browser, tmp_path):
    """``window.onebyoneConvCost``, the second writing of the cost formula (JavaScript, for the calculator and the
    experiments), called on every case of a grid: the same output shape, params, MACs and FLOPs as
    ``onebyone.cost.conv_cost``, and a refusal exactly where conv_cost refuses."""
    from onebyone import webpage

    v = Visit(browser, webpage.write(tmp_path, webpage.document("the formula", "", "")))
    cases = _formula_cases()
    got = v.page.evaluate("""cases => cases.map(([h, w, cin, cout, k, s, p, g]) => {
        try {
          const c = window.onebyoneConvCost(BigInt(h), BigInt(w), BigInt(cin), BigInt(cout), BigInt(k), BigInt(s), p,
                                            BigInt(g));
          return [c.shape, String(c.params), String(c.macs), String(c.flops)];
        } catch (e) { return "refused: " + e.message; }
      })""", cases)
    want = []
    for h, w, cin, cout, k, s, p, g in cases:
        try:
            c = cost.conv_cost((1, cin, h, w), cout, k, stride=s, padding=int(p) if p.isdigit() else p, groups=g)
            want.append([" x ".join(map(str, c.output_shape)), str(c.params), str(c.macs), str(c.flops)])
        except OneByOneError:
            want.append("refused")
    got = ["refused" if isinstance(x, str) and x.startswith("refused: ") else x for x in got]
    assert [(c, x) for c, x, y in zip(cases, got, want) if x != y] == []
    assert 500 < sum(x != "refused" for x in want) and 100 < want.count("refused")  # both kinds, many of each
    assert v.errors == [] and v.outside == []
