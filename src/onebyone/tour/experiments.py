"""Experiments a learner can touch, under a lesson's figure: plain JavaScript inlined in the page, drawing on
``<canvas>``, nothing fetched. Each computes its numbers in the browser from arrays embedded here (from
the lesson, or seeded below), and exposes what it computed on ``window.onebyone[lesson id]`` so that the
browser tests can compare it with NumPy on the same arrays. ``experiment(lesson)`` is the HTML for a
lesson, or "" where there is none yet.
"""
from __future__ import annotations

import json

import numpy as np

COMMON = """<script>
window.onebyone = window.onebyone || {};
window.onebyoneDraw = function (canvas, values, rows, cols) {  // a map on a grey scale from its min to its max
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(cols, rows);
  let lo = Infinity, hi = -Infinity;
  for (const v of values) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  const span = hi - lo || 1;
  values.forEach((v, i) => { const g = 255 - Math.round(255 * (v - lo) / span);
    img.data.set([g, g, g, 255], 4 * i); });
  const off = document.createElement("canvas"); off.width = cols; off.height = rows;
  off.getContext("2d").putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false; ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(off, 0, 0, canvas.width, canvas.height);
};
window.onebyoneTimed = function (el, fn) {  // run a redraw; its milliseconds go on the element
  const t = performance.now(); fn(); el.dataset.redrawMs = (performance.now() - t).toFixed(2);
};
</script>"""


def _json(a) -> str:
    return json.dumps(np.round(np.asarray(a, dtype=np.float64), 6).tolist())


def one_channel(arrays) -> str:
    x = np.asarray(arrays["x"])  # (28, 28)
    x2 = np.linspace(0, 1, x.shape[1])[None, :].repeat(x.shape[0], 0)  # a second channel: a left-to-right ramp
    return f"""<div class="experiment" id="exp-one-channel">
<h3>Try it: one input channel, one weight</h3>
<p>Move the weight and the bias: the output is the input rescaled and shifted, so the scatter of output
against input stays a straight line. Switch on a second input channel and the line breaks.</p>
<label>weight <input type="range" id="oc-w" min="-2" max="2" step="0.05" value="0.8"></label>
<label>bias <input type="range" id="oc-b" min="-1" max="1" step="0.05" value="0.1"></label>
<label><input type="checkbox" id="oc-second"> a second input channel (weight 0.7)</label>
<div class="exp-row"><canvas id="oc-map" width="168" height="168" aria-label="the output map"></canvas>
<canvas id="oc-scatter" width="220" height="168" aria-label="output against input at every pixel"></canvas></div>
<p class="exp-readout" id="oc-readout" aria-live="polite"></p>
</div>
<script>
(function () {{
  const x = {_json(x)}, x2 = {_json(x2)}, rows = x.length, cols = x[0].length;
  const flat = x.flat(), flat2 = x2.flat(), el = document.getElementById("exp-one-channel");
  const state = window.onebyone["one-channel"] = {{x: x, x2: x2}};
  function redraw() {{
    const w = Number(document.getElementById("oc-w").value), b = Number(document.getElementById("oc-b").value);
    const second = document.getElementById("oc-second").checked;
    const y = flat.map((v, i) => w * v + b + (second ? 0.7 * flat2[i] : 0));
    // the best straight line y ~ a x + c through the scatter, and the largest distance from it
    const n = y.length, mx = flat.reduce((s, v) => s + v, 0) / n, my = y.reduce((s, v) => s + v, 0) / n;
    let sxy = 0, sxx = 0;
    flat.forEach((v, i) => {{ sxy += (v - mx) * (y[i] - my); sxx += (v - mx) * (v - mx); }});
    const a = sxy / sxx, c = my - a * mx;
    const off = Math.max(...y.map((v, i) => Math.abs(v - (a * flat[i] + c))));
    Object.assign(state, {{w: w, b: b, second: second, y: y, slope: a, intercept: c, offLine: off}});
    window.onebyoneDraw(document.getElementById("oc-map"), y, rows, cols);
    const sc = document.getElementById("oc-scatter"), ctx = sc.getContext("2d");
    const lo = Math.min(...y), hi = Math.max(...y), span = hi - lo || 1;
    ctx.clearRect(0, 0, sc.width, sc.height); ctx.fillStyle = "#d9480f";
    flat.forEach((v, i) => ctx.fillRect(4 + v * (sc.width - 8),
                                        sc.height - 4 - (y[i] - lo) / span * (sc.height - 8), 2, 2));
    document.getElementById("oc-readout").textContent = "output = " + w.toFixed(2) + " x input + " + b.toFixed(2)
      + (second ? " + 0.7 x second channel" : "") + "; farthest point from the best straight line: "
      + off.toExponential(2);
  }}
  ["oc-w", "oc-b", "oc-second"].forEach((id) => document.getElementById(id).addEventListener("input",
    () => window.onebyoneTimed(el, redraw)));
  window.onebyoneTimed(el, redraw);
}})();
</script>"""


def nonlinearity(arrays) -> str:
    rng = np.random.default_rng(0)
    x, w1, w2 = rng.normal(size=(3, 200)), rng.normal(size=(4, 3)), rng.normal(size=(2, 4))  # 200 pixels, 3 -> 4 -> 2
    return f"""<div class="experiment" id="exp-nonlinearity">
<h3>Try it: two 1x1 layers, with and without a ReLU between them</h3>
<p>Without the ReLU, the two layers are one matrix, W2 W1, and it gives the stack's outputs exactly. With
it, no single matrix does: the best linear fit misses.</p>
<label><input type="checkbox" id="nl-relu"> ReLU between the layers</label>
<p class="exp-readout" id="nl-readout" aria-live="polite"></p>
</div>
<script>
(function () {{
  const X = {_json(x)}, W1 = {_json(w1)}, W2 = {_json(w2)}, el = document.getElementById("exp-nonlinearity");
  const state = window.onebyone["nonlinearity"] = {{X: X, W1: W1, W2: W2}};
  const mul = (A, B) => A.map((row) => B[0].map((_, j) => row.reduce((s, a, k) => s + a * B[k][j], 0)));
  const T = (A) => A[0].map((_, j) => A.map((row) => row[j]));
  function solve(A, B) {{  // A^-1 B by Gauss-Jordan elimination with partial pivoting (A is 3 x 3)
    const n = A.length, M = A.map((row, i) => row.concat(B[i]));
    for (let c = 0; c < n; c++) {{
      let p = c; for (let r = c + 1; r < n; r++) if (Math.abs(M[r][c]) > Math.abs(M[p][c])) p = r;
      [M[c], M[p]] = [M[p], M[c]];
      for (let r = 0; r < n; r++) {{
        if (r !== c) {{ const f = M[r][c] / M[c][c]; M[r] = M[r].map((v, j) => v - f * M[c][j]); }}
      }}
    }}
    return M.map((row, i) => row.slice(n).map((v) => v / M[i][i]));
  }}
  function redraw() {{
    const relu = document.getElementById("nl-relu").checked;
    let H = mul(W1, X); if (relu) H = H.map((row) => row.map((v) => Math.max(v, 0)));
    const Y = mul(W2, H), merged = mul(W2, W1), Ym = mul(merged, X);
    const fit = T(solve(mul(X, T(X)), mul(X, T(Y))));  // the least-squares M with Y ~ M X
    const Yf = mul(fit, X);
    const gap = (A, B) => Math.max(...A.flat().map((v, i) => Math.abs(v - B.flat()[i])));
    Object.assign(state, {{relu: relu, Y: Y, merged: merged, mergedGap: gap(Y, Ym), fit: fit,
                          fitResidual: gap(Y, Yf)}});
    document.getElementById("nl-readout").textContent = relu
      ? "with the ReLU: the best single matrix misses the stack by up to " + state.fitResidual.toFixed(3)
      : "without it: W2 W1 = [" + merged.map((r) => r.map((v) => v.toFixed(2)).join(", ")).join("; ")
        + "] gives the stack's outputs to " + state.mergedGap.toExponential(1);
  }}
  document.getElementById("nl-relu").addEventListener("input", () => window.onebyoneTimed(el, redraw));
  window.onebyoneTimed(el, redraw);
}})();
</script>"""


def bottleneck(arrays) -> str:
    sliders = (("bn-cin", "input channels", 16, 512, 192), ("bn-r", "reduced width", 4, 128, 16),
               ("bn-cout", "output channels", 8, 256, 32), ("bn-k", "kernel size", 1, 7, 5))
    controls = "\n".join(f'<label>{label} <input type="range" id="{i}" min="{lo}" max="{hi}" step="1" '
                         f'value="{v}"><output for="{i}" id="{i}-value">{v}</output></label>'
                         for i, label, lo, hi, v in sliders)
    return f"""<div class="experiment" id="exp-bottleneck">
<h3>Try it: the bottleneck's saving</h3>
<p>A k x k conv on a 28 x 28 map, directly or after a 1x1 conv down to the reduced width. The counts come
from the page's conv calculator (the same arithmetic as <code>onebyone.cost.conv_cost</code>).</p>
{controls}
<p class="exp-readout" id="bn-readout" aria-live="polite"></p>
</div>
<script>
(function () {{
  const el = document.getElementById("exp-bottleneck"), state = window.onebyone["bottleneck"] = {{}};
  const v = (id) => BigInt(document.getElementById(id).value);
  function redraw() {{
    const cin = v("bn-cin"), r = v("bn-r"), cout = v("bn-cout"), k = v("bn-k");
    ["bn-cin", "bn-r", "bn-cout", "bn-k"].forEach((id) => document.getElementById(id + "-value").textContent =
      document.getElementById(id).value);
    const cost = window.onebyoneConvCost;
    const direct = cost(28n, 28n, cin, cout, k, 1n, "same", 1n);
    const reduce = cost(28n, 28n, cin, r, 1n, 1n, "0", 1n), after = cost(28n, 28n, r, cout, k, 1n, "same", 1n);
    const pair = {{macs: reduce.macs + after.macs, params: reduce.params + after.params}};
    Object.assign(state, {{cin: cin, r: r, cout: cout, k: k, direct: direct, pair: pair,
                          ratio: Number(direct.macs) / Number(pair.macs)}});
    document.getElementById("bn-readout").textContent = "direct: " + direct.macs.toLocaleString("en-US") + " MACs, "
      + direct.params.toLocaleString("en-US") + " parameters; 1x1 then k x k: " + pair.macs.toLocaleString("en-US")
      + " MACs, " + pair.params.toLocaleString("en-US") + " parameters; ratio " + state.ratio.toFixed(2) + "x";
  }}
  ["bn-cin", "bn-r", "bn-cout", "bn-k"].forEach((id) => document.getElementById(id).addEventListener("input",
    () => window.onebyoneTimed(el, redraw)));
  window.onebyoneTimed(el, redraw);
}})();
</script>"""


EXPERIMENTS = {"one-channel": one_channel, "nonlinearity": nonlinearity, "bottleneck": bottleneck}


def experiment(lesson) -> str:
    """The experiment's HTML and script for a lesson that has run, or "" for a lesson without one."""
    make = EXPERIMENTS.get(lesson.id)
    return make(lesson.arrays) if make is not None and lesson.arrays else ""
