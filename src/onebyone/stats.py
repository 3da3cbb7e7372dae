"""LayerStats and ModelStats: what the analyzer collects, aggregates and renders. NumPy-free, framework-free.

Convention (as in ``onebyone.cost``): ``macs`` are multiply-accumulates of weights with inputs, bias
excluded, for every layer type alike; ``flops = 2 * macs``. ``weights`` are the multiplicative
parameters (conv / dense kernels): biases and normalization parameters are excluded, which is how
the MobileNet paper counts its shares. Normalization, activation and pooling layers have no MACs (an
eval-mode norm is a per-channel affine that folds into the conv next to it). ``params`` counts every
parameter once, however often its module is called; MACs count every call.
"""
from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field

from .checks import strict_json
from .cost import CONVENTION
from .errors import OneByOneError

KINDS = ("pointwise", "depthwise", "grouped", "conv", "dense", "attention", "norm", "activation", "pool", "other")
KIND_LABELS = {
    "pointwise": "1x1 convolutions",  # and every Linear mixing channels at each of several positions
    "depthwise": "depthwise convolutions",
    "grouped": "grouped convolutions",
    "conv": "k x k convolutions",
    "dense": "dense layers",
    "attention": "attention products",
    "norm": "normalization",
    "activation": "activations",
    "pool": "pooling",
    "other": "other",
}


def conv_kind(kernel_size, groups: int, in_channels: int, positions: int | None = None) -> str:
    """pointwise (every kernel side 1), depthwise (one group per input channel), grouped, or conv. A 1x1
    ungrouped conv that computes one output position per sample (``positions`` == 1: a (B, C, 1, 1) map)
    is "dense": the product a Linear computes on a vector (``mix_kind``)."""
    if all(k == 1 for k in kernel_size):
        return mix_kind(positions or 2) if groups == 1 else "pointwise"
    if groups > 1 and groups == in_channels:
        return "depthwise"
    return "grouped" if groups > 1 else "conv"


def mix_kind(positions: int, mixes_channels: bool = True) -> str:
    """The kind of an (O, C) product applied at ``positions`` positions of each sample: "pointwise" (a 1x1
    convolution: a channel mix at every pixel, token or point, more than one) or "dense" (one vector per
    sample, or a product that mixes positions rather than channels, such as MLP-Mixer's token mixing).
    Every equivalent form (Linear, 1x1 Conv, Pointwise) of one computation gets the same kind.

    >>> mix_kind(196), mix_kind(1), mix_kind(768, mixes_channels=False)
    ('pointwise', 'dense', 'dense')
    """
    return "pointwise" if positions > 1 and mixes_channels else "dense"


@dataclass
class LayerStats:
    name: str
    type: str
    kind: str
    input_shape: tuple
    output_shape: tuple
    params: int = 0
    weights: int = 0
    macs: int = 0
    activations: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    depth: int = 0
    per_output: str = ""  # how one output value is made, e.g. "192/1 input channels x a 5x5 kernel = 4,800 MACs"

    @classmethod
    def from_cost(cls, name: str, type_: str, kind: str, input_shape, c, first_call: bool = True) -> "LayerStats":
        """A row from a ``cost.Cost``; a layer's parameters count on its first call only."""
        return cls(name, type_, kind, tuple(input_shape), c.output_shape, c.params if first_call else 0,
                   c.weight_params if first_call else 0, c.macs, c.activations, c.bytes_read, c.bytes_written,
                   name.count("."))

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def intensity(self) -> float:
        """Arithmetic intensity: FLOPs per byte moved."""
        moved = self.bytes_read + self.bytes_written
        return self.flops / moved if moved else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(input_shape=list(self.input_shape), output_shape=list(self.output_shape), flops=self.flops,
                 intensity=round(self.intensity, 4))
        return d


@dataclass
class ModelStats:
    model: str
    rows: list
    params: int  # every parameter of the model, once
    uncounted: list = field(default_factory=list)  # (name, type, why): products that could not be counted
    batch_size: int = 1
    dtype: str = "float32"
    never_called: list = field(default_factory=list)  # (name, type, params): layers the forward pass never ran
    # (and parameters of a layer it ran that nothing read: (path, "parameter not read", numel))
    outside_layers: list = field(default_factory=list)  # (name, type, params): used outside any layer, no MACs

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.rows)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def weights(self) -> int:
        return sum(r.weights for r in self.rows)

    def totals(self) -> dict:
        return {
            "params": self.params,
            "weights": self.weights,
            "macs": self.macs,
            "flops": self.flops,
            "activations": sum(r.activations for r in self.rows),
            "bytes_read": sum(r.bytes_read for r in self.rows),
            "bytes_written": sum(r.bytes_written for r in self.rows),
        }

    def share(self, by: str = "kind") -> dict:
        """Percent of MACs, params and weights per kind (or per ``type``), rounded to 2 decimals."""
        if by not in ("kind", "type"):
            raise OneByOneError(f"by must be 'kind' or 'type', got {by!r}")
        out = {}
        for r in self.rows:
            acc = out.setdefault(getattr(r, by), {"macs": 0, "params": 0, "weights": 0})
            acc["macs"] += r.macs
            acc["params"] += r.params
            acc["weights"] += r.weights
        total = {"macs": self.macs, "params": self.params, "weights": self.weights}
        return {k: {m: round(100 * v[m] / total[m], 2) if total[m] else 0.0 for m in v} for k, v in out.items()}

    def grouped(self, depth: int) -> list:
        """Rows folded into their ancestor at ``depth`` (name components); order of first appearance."""
        merged = {}
        for r in self.rows:
            key = ".".join(r.name.split(".")[:depth + 1]) if depth >= 0 else r.name
            if key not in merged:
                merged[key] = LayerStats(
                    key,
                    r.type if key == r.name else "(block)",
                    r.kind if key == r.name else "other",
                    r.input_shape,
                    r.output_shape,
                    depth=min(r.depth, depth),
                )
            m = merged[key]
            m.output_shape = r.output_shape
            for f in ("params", "weights", "macs", "activations", "bytes_read", "bytes_written"):
                setattr(m, f, getattr(m, f) + getattr(r, f))
        return list(merged.values())

    def to_dict(self) -> dict:
        return {"model": self.model, "batch_size": self.batch_size, "dtype": self.dtype, "convention": CONVENTION,
                "totals": self.totals(), "share_by_kind": self.share(), "rows": [r.to_dict() for r in self.rows],
                "uncounted": [list(u) for u in self.uncounted], "never_called": [list(u) for u in self.never_called],
                "outside_layers": [list(u) for u in self.outside_layers]}

    def to_json(self) -> str:
        return strict_json(self.to_dict(), indent=2)

    def to_csv(self) -> str:
        buf = io.StringIO()
        cols = ["name", "type", "kind", "input_shape", "output_shape", "params", "weights", "macs", "flops",
                "activations", "bytes_read", "bytes_written", "intensity"]
        w = csv.DictWriter(buf, cols, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({**r.to_dict(), "input_shape": "x".join(map(str, r.input_shape)),
                        "output_shape": "x".join(map(str, r.output_shape))})
        return buf.getvalue()

    def _repr_html_(self) -> str:
        """Jupyter's view: the report page's figure and table, as plain HTML (``onebyone.notebook``)."""
        from .notebook import stats_html

        return stats_html(self)

    def footer(self) -> str:
        s = self.share().get("pointwise", {"macs": 0.0, "weights": 0.0, "params": 0.0})
        counted = "counted " if self.uncounted else ""  # (the shares of what could be counted)
        return (f"1x1 convolutions: {s['macs']:.1f}% of {counted}MACs, {s['weights']:.1f}% of weights "
                f"({s['params']:.1f}% of all params)")

    def summary_lines(self) -> list:
        """The totals, the 1x1 footer and the counting convention, as shown under every table."""
        t = self.totals()
        lines = [
            f"total: {t['params']:,} params ({t['weights']:,} weights), {t['macs']:,} MACs = {t['flops']:,} FLOPs, "
            f"batch {self.batch_size}, {self.dtype}",
            self.footer(),
            f"({CONVENTION})",
        ]
        if self.never_called:
            lines.append(f"never called ({sum(p for *_, p in self.never_called):,} params, no MACs): "
                         + ", ".join(f"{n} ({t})" for n, t, _ in self.never_called))
        if self.outside_layers:
            used = ", ".join(f"{n or self.model} ({t})" for n, t, _ in self.outside_layers)
            lines.append(f"parameters used outside any layer ({sum(p for *_, p in self.outside_layers):,}, "
                         f"no MACs by nature): {used}")
        if self.uncounted:
            lines.append("WARNING, not counted: " + "; ".join(f"{n} ({t}): {why}" for n, t, why in self.uncounted))
        return lines

    def cells(self, depth: int | None = None) -> tuple[tuple, list]:
        """(header, rows of strings) of the per-layer table, rows folded at ``depth`` if given (``grouped``:
        0 keeps the top-level modules, as ``onebyone summary --depth 1``); the columns from "params" on are
        numbers (right-aligned)."""
        rows = self.rows if depth is None else self.grouped(depth)
        shape = lambda s: "x".join(map(str, s))  # noqa: E731
        body = [(r.name, r.type, r.kind, shape(r.input_shape), shape(r.output_shape), f"{r.params:,}", f"{r.macs:,}",
                 f"{r.intensity:.1f}") for r in rows]
        return ("layer", "type", "kind", "input", "output", "params", "MACs", "FLOPs/B"), body

    def table(self, depth: int | None = None) -> str:
        """The per-layer table as plain text, then ``summary_lines``."""
        head, body = self.cells(depth)
        widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
        numeric = head.index("params")
        fmt = lambda cells: "  ".join(c.rjust(w) if i >= numeric else c.ljust(w)  # noqa: E731
                                      for i, (c, w) in enumerate(zip(cells, widths)))
        lines = [fmt(head), "-" * (sum(widths) + 2 * (len(widths) - 1))] + [fmt(b) for b in body]
        return "\n".join(lines + ["-" * len(lines[1])] + self.summary_lines())

    def print(self, depth: int | None = None) -> None:
        """Print the table and ``summary_lines``: with rich where it is installed, else as plain text."""
        try:
            from rich.console import Console
        except ImportError:
            print(self.table(depth))
            return
        import sys

        console = Console(width=None if sys.stdout.isatty() else 200)
        console.print(self.rich_table(depth))
        for line in self.summary_lines():
            console.print(line, markup=False)

    def rich_table(self, depth: int | None = None):
        """The same table as a ``rich.table.Table`` (rich is imported here, not by onebyone)."""
        from rich.table import Table

        head, body = self.cells(depth)
        t = Table(title=f"{self.model}: batch {self.batch_size}, {self.dtype}")
        for i, col in enumerate(head):
            t.add_column(col, justify="right" if i >= head.index("params") else "left")
        for b in body:
            t.add_row(*b)
        return t
