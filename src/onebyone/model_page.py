"""A model's report as one HTML page: the analyzer's table, MACs and params by layer kind with the 1x1
share, the layers that dominate, and the roofline of a benchmark run when one is given.

Framework-free: it reads a ``ModelStats`` (from ``onebyone.analyzer.analyze``) and a bench JSON dict.
"""
from __future__ import annotations

from pathlib import Path

from . import webpage as page
from .errors import OneByOneError
from .plots import bench_roofline, kinds_figure
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


def write_report(stats, folder, bench: dict | None = None) -> Path:
    """Write ``folder/index.html`` (and its figures) for the model analyzed in ``stats``; returns the path."""
    if not isinstance(stats, ModelStats):
        raise OneByOneError(f"expected the ModelStats that onebyone.analyze returns, got {type(stats).__name__}")
    folder = Path(folder)
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
    top = dominating(stats)
    body.append(f"""<section class="card" id="dominating"><h2>The layers that dominate</h2>
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
</section>""")
    if bench is not None:
        bench_roofline(bench, folder / "figures" / "roofline.png")
        where = esc(bench.get("machine") or "a machine the file does not name")
        body.append(f"""<section class="card" id="roofline"><h2>Roofline of the benchmark's machine</h2>
<p class="claim">Measured by <code>onebyone bench</code> on <strong>{where}</strong> (the file given with
<code>--bench</code>, not necessarily this machine): achieved GFLOP/s of 1x1 convolutions and of a fused
shared MLP against their arithmetic intensity, under that run's measured peak and memory bandwidth.</p>
{page.figure("figures/roofline.png", "roofline plot", "measured on " + bench.get("machine", "an unnamed machine"))}
</section>""")
    head, rows = stats.cells()
    body.append(f"""<section class="card" id="layers"><h2>Every layer</h2>
{page.table(head, rows, numeric=range(head.index("params"), len(head)),
            row_class=lambda i: "pointwise" if stats.rows[i].kind == "pointwise" else "")}
<ul class="notes">{"".join(f"<li>{esc(line)}</li>" for line in stats.summary_lines())}</ul>
</section>""")
    header = f"""<h1>{esc(stats.model)}</h1>
<p>{t["params"]:,} parameters, {t["macs"]:,} MACs ({t["flops"]:,} FLOPs)
for a batch of {stats.batch_size}, {esc(stats.dtype)}.</p>
<p class="summary">{esc(stats.footer())}</p>"""
    return page.write(folder, page.document(f"onebyone report: {stats.model}", header, "\n".join(body)))
