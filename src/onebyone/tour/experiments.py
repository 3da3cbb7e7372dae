"""Experiments a learner can touch, under a lesson's figure: plain JavaScript inlined in the page, drawing on
``<canvas>``, nothing fetched. Each computes its numbers in the browser from arrays embedded in its page (from
the lesson, or seeded below), and exposes what it computed on ``window.onebyone[lesson id]`` so that the
browser tests can compare it with NumPy on the same arrays.

An experiment's HTML and JavaScript are package data, ``templates/experiments/<name>.html`` and ``.js``
beside this module; here each is an ``Experiment``: its name and the function that makes its placeholders'
values (the arrays as JSON, the generated controls) from the lesson's arrays. A lesson declares its
experiment with ``@lesson(..., experiment=...)``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..webpage import fill, script, template


@dataclass(frozen=True)
class Experiment:
    """``values(arrays)`` -> {placeholder: text} for the files ``templates/experiments/<name>.html`` and
    ``.js``, or None where the arrays hold nothing to try."""
    name: str
    values: Callable

    def html(self, arrays: dict) -> str:
        """The experiment's HTML and inlined script for a lesson that kept ``arrays``; "" where it kept none
        (or nothing this experiment can use)."""
        values = self.values(arrays) if arrays else None
        if values is None:
            return ""
        files = f"experiments/{self.name}"
        return fill(template(f"{files}.html", __package__) + "\n" + script(template(f"{files}.js", __package__)),
                    **values)


def experiment(name: str):
    """``@experiment(name)``: the function ``values(arrays)`` becomes the ``Experiment`` of the files
    ``templates/experiments/<name>.html`` and ``.js``."""
    return lambda values: Experiment(name, values)


def common() -> str:
    """The script every experiment uses (``window.onebyoneDraw``, ``onebyoneTimed``, ``onebyoneWire``), once a page."""
    return script(template("common.js", __package__))


def _json(a) -> str:
    return json.dumps(np.round(np.asarray(a, dtype=np.float64), 6).tolist())


@experiment("one-channel")
def one_channel(arrays) -> dict:
    x = np.asarray(arrays["x"])  # (28, 28)
    x2 = np.linspace(0, 1, x.shape[1])[None, :].repeat(x.shape[0], 0)  # a second channel: a left-to-right ramp
    return {"x": _json(x), "x2": _json(x2)}


@experiment("nonlinearity")
def nonlinearity(arrays) -> dict:
    rng = np.random.default_rng(0)
    x, w1, w2 = rng.normal(size=(3, 200)), rng.normal(size=(4, 3)), rng.normal(size=(2, 4))  # 200 pixels, 3 -> 4 -> 2
    return {"x": _json(x), "w1": _json(w1), "w2": _json(w2)}


@experiment("bottleneck")
def bottleneck(arrays) -> dict:
    sliders = (("bn-cin", "input channels", 16, 512, 192), ("bn-r", "reduced width", 4, 128, 16),
               ("bn-cout", "output channels", 8, 256, 32), ("bn-k", "kernel size", 1, 7, 5))
    controls = "\n".join(f'<label>{label} <input type="range" id="{i}" min="{lo}" max="{hi}" step="1" '
                         f'value="{v}"><output for="{i}" id="{i}-value">{v}</output></label>'
                         for i, label, lo, hi, v in sliders)
    return {"controls": controls}


@experiment("many-channels")
def many_channels(arrays) -> dict:
    x, w, b = np.asarray(arrays["x"]), np.asarray(arrays["w"]), np.asarray(arrays["b"])  # (3, 16, 16), (8, 3), (8,)
    values = [[f"{v:.4g}" for v in row] for row in w]  # as typed: the field is as wide as its longest value
    width = max(len(v) for row in values for v in row) + 4  # characters, and room for the spin buttons
    head = "<tr><th></th>" + "".join(f'<th scope="col">in {c}</th>' for c in range(w.shape[1])) + "</tr>"
    cells = head + "\n".join(
        f'<tr><th scope="row">out {o}</th>' + "".join(
            f'<td><input type="number" step="0.1" id="mc-w-{o}-{c}" style="width: {width}ch" '
            f'aria-label="weight of output {o} from input {c}" value="{values[o][c]}"></td>'
            for c in range(w.shape[1])) + "</tr>" for o in range(w.shape[0]))
    maps = "".join(f'<figure class="exp-map"><canvas id="mc-out-{o}" width="64" height="64" '
                   f'aria-label="output channel {o}"></canvas><figcaption>out {o}</figcaption></figure>'
                   for o in range(w.shape[0]))
    return {"cells": cells, "maps": maps, "x": _json(x), "b": _json(b)}


@experiment("fc-as-conv")
def fc_as_conv(arrays) -> dict:
    x = np.asarray(arrays["x"])  # (28, 28)
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((10, 784)) / 28, rng.standard_normal(10)  # ten units of a 784 -> K dense layer
    return {"x": _json(x), "w": _json(w), "b": _json(b)}


@experiment("shared-mlp")
def shared_mlp(arrays) -> dict:
    pts = np.asarray(arrays["points"])[:128]  # (N, 3): the first 128 points of the torus
    (w1, b1), (w2, b2) = arrays["layers"]
    return {"points": _json(pts), "w1": _json(w1), "b1": _json(b1), "w2": _json(w2), "b2": _json(b2)}


@experiment("class-maps")
def class_maps(arrays) -> dict | None:
    if "params" not in arrays:
        return None
    w1, b1, w2, b2, w3, b3 = (np.asarray(p) for p in arrays["params"])  # 5x5 conv, 1x1 conv, 1x1 class maps
    image = np.asarray(arrays["image"])[0]  # (8, 8)
    maps = "".join(f'<figure class="exp-map"><canvas id="cm-map-{k}" width="48" height="48" '
                   f'aria-label="class map {k}"></canvas><figcaption id="cm-score-{k}">{k}</figcaption></figure>'
                   for k in range(10))
    weights = {"w1": w1, "b1": b1, "w2": w2, "b2": b2, "w3": w3, "b3": b3, "image": image}
    return {"maps": maps, **{name: _json(a) for name, a in weights.items()}}


@experiment("branches")
def branches(arrays) -> dict:
    x, k3, k1 = np.asarray(arrays["x"]), np.asarray(arrays["k3"]), float(arrays["k1"])  # (12, 12), (3, 3)
    sliders = (("br-a", "3x3 branch"), ("br-b", "1x1 branch"), ("br-c", "identity"))
    controls = "\n".join(f'<label>{label} x <input type="range" id="{i}" min="-2" max="2" step="0.1" value="1">'
                         f'<output for="{i}" id="{i}-value">1</output></label>' for i, label in sliders)
    kernels = "".join(f'<figure class="exp-map"><canvas id="br-k-{n}" width="72" height="72" aria-label="{t}">'
                      f'</canvas><figcaption>{t}</figcaption></figure>'
                      for n, t in (("a", "3x3 kernel"), ("b", "1x1, as 3x3"), ("c", "identity, as 3x3"),
                                   ("sum", "= one kernel")))
    return {"controls": controls, "kernels": kernels, "x": _json(x), "k3": _json(k3), "k1": repr(k1)}


@experiment("int8")
def int8(arrays) -> dict:
    return {k: _json(arrays[k]) for k in ("x", "w", "b", "exact")}
