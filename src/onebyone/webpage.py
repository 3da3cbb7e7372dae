"""The HTML shell of the explainer pages: inline CSS, the conv calculator (plain JS), tables, figures.

A page is one ``index.html`` with its figures as PNG files beside it (``figures/``); it loads nothing
from the network. The calculator reproduces ``onebyone.cost.conv_cost`` for a 2-D conv on one image:
the browser tests compare the two on a table of cases.
"""
from __future__ import annotations

import html
from pathlib import Path

from .cost import CONVENTION
from .errors import OneByOneError

CSS = """
:root { --ink: #1f2933; --muted: #52606d; --line: #d9e2ec; --bg: #f5f7fa; --pass: #2b8a3e; --fail: #c92a2a;
        --accent: #d9480f; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink); line-height: 1.5;
       font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 20px 64px; }
header h1 { margin: 8px 0 4px; font-size: 30px; }
header p { margin: 4px 0; color: var(--muted); }
code, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 0.92em; }
.formula { background: #fff; border: 1px solid var(--line);
           border-radius: 6px; padding: 8px 12px; display: inline-block; }
nav ol { columns: 2; padding-left: 22px; margin: 8px 0; }
nav a { color: var(--ink); text-decoration: none; } nav a:hover { text-decoration: underline; }
section.card { background: #fff; border: 1px solid var(--line);
               border-radius: 10px; padding: 18px 22px; margin: 22px 0; }
section.card h2 { margin: 0 0 6px; font-size: 21px; display: flex; gap: 10px; align-items: center; }
.claim { margin: 6px 0 4px; }
.source { color: var(--muted); font-size: 13px; margin: 0 0 10px; }
figure { margin: 12px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
figcaption { color: var(--muted); font-size: 13px; }
.badge { font-size: 12px; font-weight: 700; letter-spacing: 0.04em;
         padding: 2px 8px; border-radius: 999px; color: #fff; }
.badge.pass { background: var(--pass); } .badge.fail { background: var(--fail); }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; margin: 8px 0; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--bg); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.pointwise td { background: #fff4e6; }
ul.notes { margin: 8px 0 0; color: var(--muted); font-size: 14px; }
.summary { font-size: 17px; } .summary strong { color: var(--pass); } .summary strong.bad { color: var(--fail); }
#calculator form { display: grid; grid-template-columns: repeat(4, minmax(120px, 1fr)); gap: 10px 16px; }
#calculator label { display: flex; flex-direction: column; font-size: 13px; color: var(--muted); }
#calculator input { font: inherit; padding: 5px 8px;
                    border: 1px solid var(--line); border-radius: 6px; color: var(--ink); }
#calculator dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 18px; margin: 14px 0 0; }
#calculator dt { color: var(--muted); }
#calculator dd { margin: 0; font-weight: 600; font-variant-numeric: tabular-nums; }
#calc-error { color: var(--fail); min-height: 1.5em; margin-top: 8px; }
details summary { cursor: pointer; color: var(--muted); }
.experiment { border-top: 1px dashed var(--line); margin: 12px 0; padding-top: 8px; }
.experiment h3 { font-size: 16px; margin: 4px 0; }
.experiment label { margin-right: 16px; font-size: 14px; }
.exp-row { display: flex; gap: 16px; flex-wrap: wrap; margin: 8px 0; align-items: flex-start; }
.exp-row canvas { border: 1px solid var(--line); border-radius: 4px; image-rendering: pixelated; }
thead button { font: inherit; font-weight: 600; background: none; border: 0; padding: 0; cursor: pointer;
               color: var(--ink); }
.kind-bars { list-style: none; padding: 0; } .kind-bars button { background: none; border: 0; cursor: pointer;
  font: inherit; font-size: 13px; display: flex; align-items: center; gap: 8px; width: 100%; text-align: left; }
.kind-bars .bar { display: inline-block; height: 10px; background: var(--accent); max-width: 50%; }
.how { font-size: 12px; color: var(--muted); }
.exp-matrix { width: auto; } .exp-matrix input { width: 64px; font: inherit; font-size: 12px; }
.exp-matrix caption { font-size: 12px; color: var(--muted); caption-side: bottom; }
.exp-maps { display: flex; flex-wrap: wrap; gap: 6px; }
.exp-map { margin: 0; } .exp-map canvas { border: 1px solid var(--line); image-rendering: pixelated; }
.exp-readout { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px; }
"""

CALCULATOR = """
<section class="card" id="calculator">
  <h2>Conv calculator</h2>
  <p class="claim">A 2-D convolution on one image of C<sub>in</sub> &times; H &times; W.
  Padding is a number of pixels on each side, <code>same</code> or <code>valid</code>.
  The numbers follow <code>onebyone.cost.conv_cost</code> (bias included in the parameters, not in the MACs).</p>
  <form onsubmit="return false">
    <label>H <input id="calc-h" type="number" min="1" value="28"></label>
    <label>W <input id="calc-w" type="number" min="1" value="28"></label>
    <label>C_in <input id="calc-cin" type="number" min="1" value="192"></label>
    <label>C_out <input id="calc-cout" type="number" min="1" value="32"></label>
    <label>kernel <input id="calc-k" type="number" min="1" value="5"></label>
    <label>stride <input id="calc-s" type="number" min="1" value="1"></label>
    <label>padding <input id="calc-p" type="text" value="same"></label>
    <label>groups <input id="calc-g" type="number" min="1" value="1"></label>
  </form>
  <dl>
    <dt>output shape</dt><dd id="calc-shape"></dd>
    <dt>parameters</dt><dd id="calc-params"></dd>
    <dt>MACs</dt><dd id="calc-macs"></dd>
    <dt>FLOPs</dt><dd id="calc-flops"></dd>
  </dl>
  <div id="calc-error" role="alert"></div>
</section>
<script>
(function () {
  "use strict";
  const names = {h: "H", w: "W", cin: "C_in", cout: "C_out", k: "kernel", s: "stride", p: "padding", g: "groups"};
  const ids = Object.keys(names);
  const field = (id) => document.getElementById("calc-" + id);
  function int(id, min) {
    const raw = field(id).value.trim();
    if (!/^[0-9]+$/.test(raw) || Number(raw) < min)
      throw new Error(names[id] + " must be an integer >= " + min + ", got '" + raw + "'");
    return BigInt(raw);
  }
  function show(id, value) {
    const el = field(id);
    el.textContent = value === null ? "" : (typeof value === "bigint" ? value.toLocaleString("en-US") : value);
    el.dataset.value = value === null ? "" : String(value);
  }
  function update() {
    try {
      const c = window.onebyoneConvCost(int("h", 1), int("w", 1), int("cin", 1), int("cout", 1), int("k", 1),
                                        int("s", 1), field("p").value.trim(), int("g", 1));
      show("shape", c.shape);
      show("params", c.params);
      show("macs", c.macs);
      show("flops", c.flops);
      field("error").textContent = "";
    } catch (e) {
      ["shape", "params", "macs", "flops"].forEach((id) => show(id, null));
      field("error").textContent = e.message;
    }
  }
  ids.forEach((id) => field(id).addEventListener("input", update));
  update();
})();
</script>
"""

CONV_COST_JS = """<script>
// onebyone.cost.conv_cost for a 2-D conv on one image, in exact integers (BigInt): the calculator and the
// tour's experiments share it
window.onebyoneConvCost = function (h, w, cin, cout, k, s, p, g) {
  function pads(size) {  // padding before and after one axis, as cost.pad_amounts
    if (p === "valid") return [0n, 0n];
    if (p === "same") {
      const out = (size + s - 1n) / s;
      let total = (out - 1n) * s + k - size;
      if (total < 0n) total = 0n;
      return [total / 2n, total - total / 2n];
    }
    if (!/^[0-9]+$/.test(p)) throw new Error("padding must be an integer >= 0, 'same' or 'valid', got '" + p + "'");
    return [BigInt(p), BigInt(p)];
  }
  function outSize(size) {  // as cost.conv_output_size
    const [lo, hi] = pads(size);
    if (k > size + lo + hi) throw new Error("kernel " + k + " is larger than the padded input " + (size + lo + hi));
    return (size + lo + hi - k) / s + 1n;
  }
  if (cin % g !== 0n || cout % g !== 0n)
    throw new Error("groups=" + g + " must divide both C_in=" + cin + " and C_out=" + cout);
  const ho = outSize(h), wo = outSize(w), perOutput = (cin / g) * k * k;  // MACs for one output value
  const macs = cout * ho * wo * perOutput;
  return {shape: "1 x " + cout + " x " + ho + " x " + wo, params: cout * perOutput + cout, macs: macs,
          flops: 2n * macs};
};
</script>"""


class Raw(str):
    """A string of HTML that ``esc`` (and so ``table``) passes through unescaped."""


def esc(value) -> str:
    return value if isinstance(value, Raw) else html.escape(str(value), quote=True)


def badge(passed: bool) -> Raw:
    return Raw(f'<span class="badge {"pass" if passed else "fail"}">{"PASS" if passed else "FAIL"}</span>')


def table(head, rows, numeric=(), row_class=None) -> str:
    """An HTML table; ``numeric`` are the column indices to right-align; cells are escaped."""
    cls = lambda i: ' class="num"' if i in numeric else ""  # noqa: E731
    out = [
        "<table><thead><tr>"
        + "".join(f"<th{cls(i)}>{esc(h)}</th>" for i, h in enumerate(head))
        + "</tr></thead><tbody>"
    ]
    for k, row in enumerate(rows):
        rc = f' class="{row_class(k)}"' if row_class and row_class(k) else ""
        out.append(f"<tr{rc}>" + "".join(f"<td{cls(i)}>{esc(c)}</td>" for i, c in enumerate(row)) + "</tr>")
    return "\n".join(out + ["</tbody></table>"])


def figure(src: str, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{esc(src)}" alt="{esc(alt)}" loading="eager">{cap}</figure>'


def document(title: str, header: str, body: str) -> str:
    """A whole page: ``header`` and ``body`` are HTML; the calculator and the convention close it."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{CSS}</style>
{CONV_COST_JS}
</head>
<body>
<main>
<header>{header}</header>
{body}
{CALCULATOR}
<p class="source">Counting convention: {esc(CONVENTION)}. Made by onebyone.</p>
</main>
</body>
</html>
"""


MARK = ".onebyone-page"  # in a page's folder: onebyone wrote index.html and figures/ there, and may again


def check_page_folder(folder, flag: str = "--html") -> Path:
    """``folder`` if a page may be written there (see ``claim``) and its parent is writable, checked without
    writing anything (``flag`` names the option in the messages)."""
    from .checks import check_writable

    folder = Path(check_writable(folder, flag))
    if folder.exists() and not folder.is_dir():
        raise OneByOneError(f"the page folder {folder} is a file; expected a folder (new, empty, or a page's)")
    if folder.is_dir() and not (folder / MARK).is_file() and any(folder.iterdir()):
        raise OneByOneError(f"{folder} is not empty and holds no page written by onebyone: choose a new or empty "
                            "folder (a page writes index.html and figures/, never over files of yours)")
    return folder


def claim(folder) -> Path:
    """The folder a page is written into, made ready: new, empty, or one a page was written into before (its
    ``MARK``). A folder holding anything else is refused before anything is written: a page never replaces a
    file of the user's (an ``index.html`` of theirs)."""
    folder = check_page_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARK).write_text("index.html and figures/ in this folder were written by onebyone\n")
    return folder


def write(folder, text: str) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "index.html"
    path.write_text(text, encoding="utf-8")
    return path
