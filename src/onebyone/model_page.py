"""A model's report as one HTML page: the analyzer's table, MACs and params by layer kind with the 1x1
share, the layers that dominate, and the roofline of a benchmark run when one is given.

Framework-free: it reads a ``ModelStats`` (from ``onebyone.analyzer.analyze``) and a bench JSON dict.
"""
from __future__ import annotations

from pathlib import Path

from . import webpage as page
from .errors import OneByOneError
from .plots import bench_roofline, check_bench, kinds_figure
from .stats import KIND_LABELS, KINDS, ModelStats
from .webpage import esc

TOP = 10  # layers listed as dominating


def by_kind(stats) -> dict:
    """kind -> MACs, params (summed over the rows) and their percent of the model's totals, in KINDS order."""
    share = stats.share()
    out = {}
    for k in KINDS:
        rows = [r for r in stats.rows if r.kind == k]
        if rows:
            out[k] = {"macs": sum(r.macs for r in rows), "params": sum(r.params for r in rows),
                      "macs_pct": share[k]["macs"], "params_pct": share[k]["params"]}
    return out


def dominating(stats, top: int = TOP) -> list:
    """The ``top`` layers by MACs: (row, percent of all MACs, cumulative percent)."""
    total = stats.macs or 1
    rows = sorted((r for r in stats.rows if r.macs), key=lambda r: -r.macs)[:top]
    out, acc = [], 0.0
    for r in rows:
        acc += 100 * r.macs / total
        out.append((r, 100 * r.macs / total, acc))
    return out


def _shape(s) -> str:
    return " x ".join(map(str, s))


def how(r) -> str:
    """How a row's numbers were computed, in words and its own numbers (``onebyone.cost``'s convention)."""
    parts = []
    if r.macs:
        each = r.per_output or (f"{r.macs // r.activations:,} MACs" if r.activations else "")
        per = f"{r.activations:,} output values x ({each}) = " if each and r.activations and \
            r.macs % r.activations == 0 else ""
        parts.append(f"MACs = {per}{r.macs:,}; FLOPs = 2 x MACs = {r.flops:,}")
    else:
        parts.append("no MACs: " + {"norm": "a per-channel affine (it folds into a conv)", "activation": "elementwise",
                                   "pool": "comparisons or additions, not weight products"}.get(r.kind, "no weight product"))
    if r.params:
        parts.append(f"params = {r.weights:,} weights + {r.params - r.weights:,} others (biases, norm scales) "
                     f"= {r.params:,}")
    parts.append(f"bytes read {r.bytes_read:,} (input and parameters once), written {r.bytes_written:,}")
    return "; ".join(parts)


LAYER_TABLE_JS = """<script>
(function () {
  "use strict";
  const table = document.getElementById("layer-table"), body = table.tBodies[0];
  const kind = document.getElementById("layer-kind"), name = document.getElementById("layer-name");
  let order = {col: -1, dir: 1};
  function apply() {
    const k = kind.value, n = name.value.trim().toLowerCase();
    for (const row of body.rows) row.hidden = (k && row.dataset.kind !== k) || (n && !row.dataset.name.toLowerCase().includes(n));
    document.getElementById("layer-count").textContent = body.querySelectorAll("tr:not([hidden])").length + " of " + body.rows.length + " rows";
  }
  table.querySelectorAll("thead button").forEach((button, col) => button.addEventListener("click", () => {
    order = {col: col, dir: order.col === col ? -order.dir : (button.dataset.numeric ? -1 : 1)};
    const rows = Array.from(body.rows), key = (r) => r.cells[col].dataset.sort;
    rows.sort((a, b) => order.dir * (button.dataset.numeric ? Number(key(a)) - Number(key(b)) : key(a).localeCompare(key(b))));
    rows.forEach((r) => body.appendChild(r));
    table.querySelectorAll("thead th").forEach((th, i) => th.setAttribute("aria-sort", i === col ? (order.dir > 0 ? "ascending" : "descending") : "none"));
  }));
  document.querySelectorAll("#kind-bars button").forEach((b) => b.addEventListener("click", () => {
    kind.value = kind.value === b.dataset.kind ? "" : b.dataset.kind; apply();
    document.getElementById("layers").scrollIntoView();
  }));
  kind.addEventListener("input", apply); name.addEventListener("input", apply);
  window.onebyone = window.onebyone || {};
  window.onebyone.report = {visible: () => Array.from(body.rows).filter((r) => !r.hidden).map((r) => r.dataset.name)};
  apply();
})();
</script>"""


def layer_table(stats, kinds: dict) -> str:
    """The 'Every layer' section: a table that sorts by any column and filters by kind and name, each row
    with how its numbers were computed, and a bar per kind that filters the table to it."""
    head, cells = stats.cells()
    numeric = range(head.index("params"), len(head))
    sort_keys = [(r.name, r.type, r.kind, str(r.input_shape), str(r.output_shape), r.params, r.macs, r.intensity)
                 for r in stats.rows]
    num = ' class="num"'
    th = "".join(f'<th{num if i in numeric else ""} aria-sort="none"><button type="button"'
                 f'{" data-numeric=1" if i in numeric else ""}>{esc(h)}</button></th>' for i, h in enumerate(head))
    rows = []
    for r, row, keys in zip(stats.rows, cells, sort_keys):
        tds = "".join(f'<td{num if i in numeric else ""} data-sort="{esc(k)}">{esc(c)}</td>'
                      for i, (c, k) in enumerate(zip(row, keys)))
        pw = ' class="pointwise"' if r.kind == "pointwise" else ""
        rows.append(f'<tr{pw} data-kind="{esc(r.kind)}" data-name="{esc(r.name)}">{tds}'
                    f'<td><details><summary>how</summary><span class="how">{esc(how(r))}</span></details></td></tr>')
    options = "".join(f'<option value="{esc(k)}">{esc(KIND_LABELS[k])}</option>' for k in kinds)
    top = max((v["macs_pct"] for v in kinds.values()), default=1) or 1
    bars = "".join(f'<li><button type="button" data-kind="{esc(k)}" aria-label="show only {esc(KIND_LABELS[k])}">'
                   f'<span class="bar" style="width: {max(1.0, 100 * v["macs_pct"] / top):.1f}%"></span>'
                   f'{esc(KIND_LABELS[k])}: {v["macs_pct"]:.1f}% of MACs</button></li>' for k, v in kinds.items())
    return f"""<section class="card" id="layers"><h2>Every layer</h2>
<p class="claim">Click a column to sort, a kind to show only its layers; "how" shows each row's arithmetic.</p>
<ul id="kind-bars" class="kind-bars">{bars}</ul>
<p><label>kind <select id="layer-kind"><option value="">all</option>{options}</select></label>
<label>name <input id="layer-name" type="search" placeholder="part of a layer's name"></label>
<span id="layer-count" aria-live="polite"></span></p>
<table id="layer-table"><thead><tr>{th}<th>how</th></tr></thead><tbody>
{"".join(rows)}
</tbody></table>
<ul class="notes">{"".join(f"<li>{esc(line)}</li>" for line in stats.summary_lines())}</ul>
</section>
{LAYER_TABLE_JS}"""


def write_report(stats, folder, bench: dict | None = None) -> Path:
    """Write ``folder/index.html`` (and its figures) for the model analyzed in ``stats``; returns the path."""
    if not isinstance(stats, ModelStats):
        raise OneByOneError(f"expected the ModelStats that onebyone.analyze returns, got {type(stats).__name__}")
    from .checks import check_writable

    folder = page.claim(check_writable(folder, "the report folder"))
    kinds = by_kind(stats)
    kinds_figure(kinds, folder / "figures" / "kinds.png", KIND_LABELS)
    t = stats.totals()
    body = [
        f"""<section class="card" id="costs"><h2>Where the work is</h2>
<p class="claim">{esc(stats.footer())}.</p>
{page.figure("figures/kinds.png", "MACs and parameters by layer kind")}
{
            page.table(
                ("kind", "MACs", "% of MACs", "params", "% of params"),
                [
                    (
                        KIND_LABELS[k],
                        f"{v['macs']:,}",
                        f"{v['macs_pct']:.1f}",
                        f"{v['params']:,}",
                        f"{v['params_pct']:.1f}",
                    )
                    for k, v in kinds.items()
                ],
                numeric=(1, 2, 3, 4),
                row_class=lambda i: "pointwise" if list(kinds)[i] == "pointwise" else "",
            )
        }
</section>"""
    ]
    body.append(_dominating_section(stats))
    if bench is not None:
        body.append(_roofline_section(check_bench(bench), folder))
    body.append(layer_table(stats, kinds))
    header = f"""<h1>{esc(stats.model)}</h1>
<p>{t["params"]:,} parameters, {t["macs"]:,} MACs ({t["flops"]:,} FLOPs)
for a batch of {stats.batch_size}, {esc(stats.dtype)}.</p>
<p class="summary">{esc(stats.footer())}</p>"""
    return page.write(folder, page.document(f"onebyone report: {stats.model}", header, "\n".join(body)))


def _dominating_section(stats) -> str:
    """The layers with the most MACs, 1x1 convolutions highlighted."""
    top = dominating(stats)
    return f"""<section class="card" id="dominating"><h2>The layers that dominate</h2>
<p class="claim">The {len(top)} layers with the most MACs; 1x1 convolutions are highlighted.</p>
{
        page.table(
            ("layer", "type", "kind", "output", "MACs", "% of MACs", "cumulative %"),
            [
                (r.name, r.type, r.kind, _shape(r.output_shape), f"{r.macs:,}", f"{p:.1f}", f"{c:.1f}")
                for r, p, c in top
            ],
            numeric=(4, 5, 6),
            row_class=lambda i: "pointwise" if top[i][0].kind == "pointwise" else "",
        )
    }
</section>"""


def _roofline_section(bench: dict, folder: Path) -> str:
    """The roofline of a bench run (``onebyone bench --json``), drawn into ``folder/figures``."""
    bench_roofline(bench, folder / "figures" / "roofline.png")
    where = esc(bench.get("machine") or "a machine the file does not name")
    return f"""<section class="card" id="roofline"><h2>Roofline of the benchmark's machine</h2>
<p class="claim">Measured by <code>onebyone bench</code> on <strong>{where}</strong> (the file given with
<code>--bench</code>, not necessarily this machine): achieved GFLOP/s of 1x1 convolutions and of a fused
shared MLP against their arithmetic intensity, under that run's measured peak and memory bandwidth.</p>
{page.figure("figures/roofline.png", "roofline plot", "measured on " + bench.get("machine", "an unnamed machine"))}
</section>"""
