"""A model's report as one HTML page: the analyzer's table, MACs and params by layer kind with the 1x1
share, the layers that dominate, and the roofline of a benchmark run when one is given.

Framework-free: it reads a ``ModelStats`` (from ``onebyone.analyzer.analyze``) and a bench JSON dict. Its
sections and the layer table's script are files in ``templates/`` (``report_*``), filled by ``webpage.fill``.
"""
from __future__ import annotations

import math
from pathlib import Path

from . import webpage as page
from .errors import OneByOneError
from .plots import bench_roofline, check_bench, kinds_figure
from .stats import KIND_LABELS, KINDS, ModelStats
from .webpage import esc, fill, template

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
        why = {"norm": "a per-channel affine (it folds into a conv)", "activation": "elementwise",
               "pool": "comparisons or additions, not weight products"}
        parts.append("no MACs: " + why.get(r.kind, "no weight product"))
    if r.params:
        parts.append(f"params = {r.weights:,} weights + {r.params - r.weights:,} others (biases, norm scales) "
                     f"= {r.params:,}")
    parts.append(f"bytes read {r.bytes_read:,} (input and parameters once), written {r.bytes_written:,}")
    return "; ".join(parts)


def _size_key(shape) -> str:
    """A shape's sort key as text: its element count, zero-padded (text order is size order, not "(1, 1024" before
    "(1, 32")."""
    return f"{math.prod(shape) if shape else 0:024d}"


def layer_table(stats, kinds: dict) -> str:
    """The 'Every layer' section: a table that sorts by any column and filters by kind and name, each row
    with how its numbers were computed, and a bar per kind that filters the table to it."""
    head, cells = stats.cells()
    numeric = range(head.index("params"), len(head))
    sort_keys = [(r.name, r.type, r.kind, _size_key(r.input_shape), _size_key(r.output_shape), r.params, r.macs,
                  r.intensity) for r in stats.rows]
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
    notes = "".join(f"<li>{esc(line)}</li>" for line in stats.summary_lines())
    return fill(template("report_layers.html"), bars=bars, options=options, th=th, rows="".join(rows), notes=notes,
                script=template("report_layers.js"))


def write_report(stats, folder, bench: dict | None = None) -> Path:
    """Write ``folder/index.html`` (and its figures) for the model analyzed in ``stats``; returns the path."""
    if not isinstance(stats, ModelStats):
        raise OneByOneError(f"expected the ModelStats that onebyone.analyze returns, got {type(stats).__name__}")
    from .checks import check_writable

    folder = page.claim(check_writable(folder, "the report folder"))
    kinds = by_kind(stats)
    kinds_figure(kinds, folder / "figures" / "kinds.png", KIND_LABELS)
    body = [_costs_section(stats, kinds), _dominating_section(stats)]
    if bench is not None:
        body.append(_roofline_section(check_bench(bench), folder))
    body.append(layer_table(stats, kinds))
    t = stats.totals()
    header = fill(template("report_header.html"), model=esc(stats.model), params=f"{t['params']:,}",
                  macs=f"{t['macs']:,}", flops=f"{t['flops']:,}", batch_size=stats.batch_size, dtype=esc(stats.dtype),
                  footer=esc(stats.footer()))
    return page.write(folder, page.document(f"onebyone report: {stats.model}", header, "\n".join(body)))


def _costs_section(stats, kinds: dict) -> str:
    """MACs and params by layer kind: the figure (already drawn into ``figures/kinds.png``) and the table."""
    rows = [(KIND_LABELS[k], f"{v['macs']:,}", f"{v['macs_pct']:.1f}", f"{v['params']:,}", f"{v['params_pct']:.1f}")
            for k, v in kinds.items()]
    table = page.table(("kind", "MACs", "% of MACs", "params", "% of params"), rows, numeric=(1, 2, 3, 4),
                       row_class=lambda i: "pointwise" if list(kinds)[i] == "pointwise" else "")
    return fill(template("report_costs.html"), footer=esc(stats.footer()), table=table,
                figure=page.figure("figures/kinds.png", "MACs and parameters by layer kind"))


def _dominating_section(stats) -> str:
    """The layers with the most MACs, 1x1 convolutions highlighted."""
    top = dominating(stats)
    rows = [(r.name, r.type, r.kind, _shape(r.output_shape), f"{r.macs:,}", f"{p:.1f}", f"{c:.1f}") for r, p, c in top]
    table = page.table(("layer", "type", "kind", "output", "MACs", "% of MACs", "cumulative %"), rows,
                       numeric=(4, 5, 6), row_class=lambda i: "pointwise" if top[i][0].kind == "pointwise" else "")
    claim = (f"The {len(top)} layer{'s' * (len(top) > 1)} with the most MACs; 1x1 convolutions are highlighted."
             if top else "No layer of this model multiplies: it has no MACs.")
    return fill(template("report_dominating.html"), claim=claim, table=table if top else "")


def _roofline_section(bench: dict, folder: Path) -> str:
    """The roofline of a bench run (``onebyone bench --json``), drawn into ``folder/figures``."""
    bench_roofline(bench, folder / "figures" / "roofline.png")
    where = esc(bench.get("machine") or "a machine the file does not name")
    caption = "measured on " + bench.get("machine", "an unnamed machine")
    figure = page.figure("figures/roofline.png", "roofline plot", caption)
    return fill(template("report_roofline.html"), where=where, figure=figure)
