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
window.onebyoneDraw = function (canvas, values, rows, cols, range) {  // a grey scale from min to max (or range)
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(cols, rows);
  let [lo, hi] = range || [Infinity, -Infinity];
  if (!range) for (const v of values) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
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
window.onebyoneWire = function (el, controls, redraw) {  // a timed redraw on every input of the controls, and now
  const run = () => window.onebyoneTimed(el, redraw);
  controls.forEach((c) => (typeof c === "string" ? document.getElementById(c) : c).addEventListener("input", run));
  run();
  return run;
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
  window.onebyoneWire(el, ["oc-w", "oc-b", "oc-second"], redraw);
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
  window.onebyoneWire(el, ["nl-relu"], redraw);
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
  window.onebyoneWire(el, ["bn-cin", "bn-r", "bn-cout", "bn-k"], redraw);
}})();
</script>"""


def many_channels(arrays) -> str:
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
    return f"""<div class="experiment" id="exp-many-channels">
<h3>Try it: a dense layer at every pixel</h3>
<p>Point at a pixel of the input (or focus it and use the arrow keys): its 3 channel values, the 8 x 3
weights and their product are the 8 outputs at that pixel. Edit a weight: every pixel's output changes,
because every pixel shares the same weights.</p>
<div class="exp-row"><canvas id="mc-in" width="160" height="160" tabindex="0"
aria-label="the input: pick a pixel with the mouse or the arrow keys"></canvas>
<table class="exp-matrix" aria-label="the weights W (8 x 3)"><caption>W: a row per output channel, a column
per input channel</caption>{cells}</table></div>
<div class="exp-row">{maps}</div>
<p class="exp-readout" id="mc-readout" aria-live="polite"></p>
</div>
<script>
(function () {{
  const x = {_json(x)}, b = {_json(b)}, C = x.length, H = x[0].length, W = x[0][0].length, O = b.length;
  const el = document.getElementById("exp-many-channels"), input = document.getElementById("mc-in");
  const state = window.onebyone["many-channels"] = {{x: x, b: b, pixel: [5, 7]}};
  const weights = () => b.map((_, o) => x.map((_, c) => Number(document.getElementById("mc-w-" + o + "-" + c).value)));
  function redraw() {{
    const w = weights(), [i, j] = state.pixel;
    const y = w.map((row, o) => Array.from({{length: H}}, (_, r) => Array.from({{length: W}}, (_, q) =>
      row.reduce((s, wc, c) => s + wc * x[c][r][q], b[o]))));
    const column = x.map((ch) => ch[i][j]);
    Object.assign(state, {{w: w, y: y, column: column, product: y.map((m) => m[i][j])}});
    window.onebyoneDraw(input, x[0].flat(), H, W);
    const ctx = input.getContext("2d"), sx = input.width / W, sy = input.height / H;
    ctx.strokeStyle = "#d9480f"; ctx.lineWidth = 2; ctx.strokeRect(j * sx, i * sy, sx, sy);
    y.forEach((m, o) => {{
      const cv = document.getElementById("mc-out-" + o);
      window.onebyoneDraw(cv, m.flat(), H, W);
      const c2 = cv.getContext("2d"); c2.strokeStyle = "#d9480f"; c2.lineWidth = 2;
      c2.strokeRect(j * cv.width / W, i * cv.height / H, cv.width / W, cv.height / H);
    }});
    document.getElementById("mc-readout").textContent = "pixel (" + i + ", " + j + "): x = ["
      + column.map((v) => v.toFixed(2)).join(", ") + "], W x + b = [" + state.product.map((v) => v.toFixed(2)).join(", ") + "]";
  }}
  const pick = (i, j) => {{ state.pixel = [Math.min(H - 1, Math.max(0, i)), Math.min(W - 1, Math.max(0, j))];
                           window.onebyoneTimed(el, redraw); }};
  input.addEventListener("mousemove", (e) => {{ const r = input.getBoundingClientRect();
    pick(Math.floor((e.clientY - r.top) / r.height * H), Math.floor((e.clientX - r.left) / r.width * W)); }});
  input.addEventListener("keydown", (e) => {{
    const d = {{ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1]}}[e.key];
    if (d) {{ e.preventDefault(); pick(state.pixel[0] + d[0], state.pixel[1] + d[1]); }}
  }});
  window.onebyoneWire(el, Array.from(el.querySelectorAll(".exp-matrix input")), redraw);
}})();
</script>"""


def fc_as_conv(arrays) -> str:
    x = np.asarray(arrays["x"])  # (28, 28)
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((10, 784)) / 28, rng.standard_normal(10)  # ten units of a 784 -> K dense layer
    return f"""<div class="experiment" id="exp-fc-as-conv">
<h3>Try it: one unit of a fully connected layer, three ways</h3>
<p>Pick an output unit of a 784 -> 10 dense layer on the 28 x 28 image: its 784 weights are (a) one 28 x 28
kernel over the whole image and (b) one 1 x 1 filter 784 channels deep on the image reshaped to
1 x 1 x 784. The three outputs are the same number.</p>
<label>unit <input type="range" id="fc-unit" min="0" max="9" step="1" value="0"><output id="fc-unit-value">0</output></label>
<div class="exp-row"><canvas id="fc-kernel" width="140" height="140" aria-label="(a) the unit's weights as a 28 x 28 kernel"></canvas>
<canvas id="fc-filter" width="392" height="20" aria-label="(b) the same weights as a 1 x 1 x 784 filter"></canvas></div>
<p class="exp-readout" id="fc-readout" aria-live="polite"></p>
</div>
<script>
(function () {{
  const x = {_json(x)}, w = {_json(w)}, b = {_json(b)}, el = document.getElementById("exp-fc-as-conv");
  const state = window.onebyone["fc-as-conv"] = {{x: x, w: w, b: b}}, flat = x.flat();
  function redraw() {{
    const k = Number(document.getElementById("fc-unit").value), wk = w[k];
    document.getElementById("fc-unit-value").textContent = k;
    const dense = wk.reduce((s, v, i) => s + v * flat[i], b[k]);  // the dense layer: w . flatten(x) + b
    let full = b[k];  // (a) the 28 x 28 kernel laid on the image: one position, sum over rows and columns
    for (let r = 0; r < 28; r++) for (let c = 0; c < 28; c++) full += wk[28 * r + c] * x[r][c];
    const pixel = flat.slice();  // (b) the image as one pixel with 784 channels, then a 1 x 1 filter
    const pointwise = pixel.reduce((s, v, ch) => s + wk[ch] * v, b[k]);
    Object.assign(state, {{unit: k, dense: dense, full: full, pointwise: pointwise}});
    window.onebyoneDraw(document.getElementById("fc-kernel"), wk, 28, 28);
    window.onebyoneDraw(document.getElementById("fc-filter"), wk, 1, 784);
    document.getElementById("fc-readout").textContent = "unit " + k + ": dense " + dense.toFixed(6) + ", (a) 28 x 28 kernel "
      + full.toFixed(6) + ", (b) 1 x 1 x 784 filter " + pointwise.toFixed(6);
  }}
  window.onebyoneWire(el, ["fc-unit"], redraw);
}})();
</script>"""


def shared_mlp(arrays) -> str:
    pts = np.asarray(arrays["points"])[:128]  # (N, 3): the first 128 points of the torus
    (w1, b1), (w2, b2) = arrays["layers"]
    return f"""<div class="experiment" id="exp-shared-mlp">
<h3>Try it: a shared MLP over points</h3>
<p>Turn the cloud. Every point goes through the same small MLP (3 -> 64 -> 128); the max over the points
is the cloud's global feature. Shuffle the points: the per-point features move with them, the global
feature does not change.</p>
<label>turn <input type="range" id="sm-angle" min="0" max="360" step="5" value="30"></label>
<button type="button" id="sm-shuffle">shuffle the points</button>
<div class="exp-row"><canvas id="sm-cloud" width="200" height="200" aria-label="the point cloud"></canvas>
<canvas id="sm-features" width="256" height="200" aria-label="the per-point features: a row per point, a column per feature"></canvas>
<canvas id="sm-global" width="384" height="120" aria-label="the global feature: 128 maxima"></canvas></div>
<p class="exp-readout" id="sm-readout" aria-live="polite"></p>
</div>
<script>
(function () {{
  const points = {_json(pts)}, W1 = {_json(w1)}, b1 = {_json(b1)}, W2 = {_json(w2)}, b2 = {_json(b2)};
  const el = document.getElementById("exp-shared-mlp");
  const state = window.onebyone["shared-mlp"] = {{points: points, W1: W1, b1: b1, W2: W2, b2: b2,
                                                 order: points.map((_, i) => i), shuffles: 0}};
  const layer = (W, b, v) => W.map((row, o) => Math.max(0, row.reduce((s, w, c) => s + w * v[c], b[o])));
  let seed = 1;
  const random = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
  function redraw() {{
    const cloud = state.order.map((i) => points[i]);
    const features = cloud.map((p) => layer(W2, b2, layer(W1, b1, p)));  // (N, 128): the same MLP at every point
    const pooled = features[0].map((_, c) => Math.max(...features.map((f) => f[c])));
    Object.assign(state, {{features: features, pooled: pooled}});
    window.onebyoneDraw(document.getElementById("sm-features"), features.flat(), features.length, features[0].length);
    const a = Number(document.getElementById("sm-angle").value) * Math.PI / 180;
    const cv = document.getElementById("sm-cloud"), ctx = cv.getContext("2d");
    ctx.clearRect(0, 0, cv.width, cv.height); ctx.fillStyle = "#1c7ed6";
    const span = Math.max(...points.flat().map(Math.abs)) || 1;
    cloud.forEach(([px, py, pz]) => ctx.fillRect(100 + 90 * (px * Math.cos(a) - pz * Math.sin(a)) / span,
                                                  100 - 90 * py / span, 3, 3));
    const g = document.getElementById("sm-global"), gc = g.getContext("2d"), top = Math.max(...pooled) || 1;
    gc.clearRect(0, 0, g.width, g.height); gc.fillStyle = "#d9480f";
    pooled.forEach((v, c) => gc.fillRect(3 * c, g.height - v / top * g.height, 2, v / top * g.height));
    document.getElementById("sm-readout").textContent = "shuffled " + state.shuffles + " time(s); global feature: ["
      + pooled.slice(0, 4).map((v) => v.toFixed(3)).join(", ") + ", ...]";
  }}
  const run = window.onebyoneWire(el, ["sm-angle"], redraw);
  document.getElementById("sm-shuffle").addEventListener("click", () => {{
    for (let i = state.order.length - 1; i > 0; i--) {{
      const j = Math.floor(random() * (i + 1)); [state.order[i], state.order[j]] = [state.order[j], state.order[i]];
    }}
    state.shuffles += 1; run();
  }});
}})();
</script>"""


def class_maps(arrays) -> str:
    if "params" not in arrays:
        return ""
    w1, b1, w2, b2, w3, b3 = (np.asarray(p) for p in arrays["params"])  # 5x5 conv, 1x1 conv, 1x1 class maps
    image = np.asarray(arrays["image"])[0]  # (8, 8)
    maps = "".join(f'<figure class="exp-map"><canvas id="cm-map-{k}" width="48" height="48" '
                   f'aria-label="class map {k}"></canvas><figcaption id="cm-score-{k}">{k}</figcaption></figure>'
                   for k in range(10))
    return f"""<div class="experiment" id="exp-class-maps">
<h3>Try it: draw a digit</h3>
<p>Draw on the grid with the mouse or a finger (or move with the arrow keys and press space to ink a
cell). The trained model runs here, in the page: its ten class maps and their means, the scores, follow
your drawing. Switch to the wide canvas and draw two digits side by side: each map lights up where its
digit is.</p>
<label><input type="checkbox" id="cm-wide"> wide canvas (8 x 16)</label>
<button type="button" id="cm-clear">clear</button>
<div class="exp-row"><canvas id="cm-draw" width="160" height="160" tabindex="0" aria-label="the drawing grid"
style="touch-action: none"></canvas><div class="exp-maps">{maps}</div></div>
<p class="exp-readout" id="cm-readout" aria-live="polite"></p>
</div>
<script>
(function () {{
  const W1 = {_json(w1)}, b1 = {_json(b1)}, W2 = {_json(w2)}, b2 = {_json(b2)}, W3 = {_json(w3)}, b3 = {_json(b3)};
  const el = document.getElementById("exp-class-maps"), pad = document.getElementById("cm-draw");
  const state = window.onebyone["class-maps"] = {{W1: W1, b1: b1, W2: W2, b2: b2, W3: W3, b3: b3,
                                                 image: {_json(image)}, cursor: [3, 3]}};
  const dense = (W, b, v, relu) => W.map((row, o) => {{ const s = row.reduce((t, w, c) => t + w * v[c], b[o]);
                                                        return relu ? Math.max(0, s) : s; }});
  function redraw() {{
    const img = state.image, H = img.length, Wd = img[0].length;
    const maps = Array.from({{length: 10}}, () => Array.from({{length: H}}, () => new Array(Wd).fill(0)));
    for (let i = 0; i < H; i++) for (let j = 0; j < Wd; j++) {{
      const patch = [];  // the 5 x 5 neighbourhood, zero padded, row by row (forms.im2col's order)
      for (let di = -2; di <= 2; di++) for (let dj = -2; dj <= 2; dj++) {{
        const r = i + di, c = j + dj; patch.push(r >= 0 && r < H && c >= 0 && c < Wd ? img[r][c] : 0);
      }}
      const out = dense(W3, b3, dense(W2, b2, dense(W1, b1, patch, true), true), false);  // the 1x1 head
      out.forEach((v, k) => {{ maps[k][i][j] = v; }});
    }}
    const scores = maps.map((m) => m.flat().reduce((s, v) => s + v, 0) / (H * Wd));  // the mean of each map
    Object.assign(state, {{maps: maps, scores: scores}});
    window.onebyoneDraw(pad, img.flat(), H, Wd);
    const ctx = pad.getContext("2d"), [ci, cj] = state.cursor;
    ctx.strokeStyle = "#1c7ed6"; ctx.strokeRect(cj * pad.width / Wd, ci * pad.height / H, pad.width / Wd, pad.height / H);
    const best = scores.indexOf(Math.max(...scores));
    maps.forEach((m, k) => {{
      const cv = document.getElementById("cm-map-" + k); cv.width = 48 * Wd / 8;
      window.onebyoneDraw(cv, m.flat(), H, Wd);
      const cap = document.getElementById("cm-score-" + k);
      cap.textContent = k + ": " + scores[k].toFixed(2); cap.style.fontWeight = k === best ? "700" : "400";
    }});
    document.getElementById("cm-readout").textContent = "the model reads " + best + " (score " + scores[best].toFixed(2)
      + ", the mean of map " + best + ")";
  }}
  const ink = (i, j) => {{
    const img = state.image;
    if (i < 0 || j < 0 || i >= img.length || j >= img[0].length) return;
    img[i][j] = 1;
    window.onebyoneTimed(el, redraw);
  }};
  const cell = (e) => {{ const r = pad.getBoundingClientRect(), img = state.image;
    return [Math.floor((e.clientY - r.top) / r.height * img.length), Math.floor((e.clientX - r.left) / r.width * img[0].length)]; }};
  let drawing = false;
  pad.addEventListener("pointerdown", (e) => {{ drawing = true; pad.setPointerCapture(e.pointerId); ink(...cell(e)); }});
  pad.addEventListener("pointermove", (e) => {{ if (drawing) ink(...cell(e)); }});
  pad.addEventListener("pointerup", () => {{ drawing = false; }});
  pad.addEventListener("keydown", (e) => {{
    const d = {{ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1]}}[e.key], img = state.image;
    if (d) {{ e.preventDefault(); state.cursor = [Math.min(img.length - 1, Math.max(0, state.cursor[0] + d[0])),
                                                  Math.min(img[0].length - 1, Math.max(0, state.cursor[1] + d[1]))];
             window.onebyoneTimed(el, redraw); }}
    if (e.key === " ") {{ e.preventDefault(); ink(...state.cursor); }}
  }});
  const blank = () => {{ const wide = document.getElementById("cm-wide").checked;
    pad.width = wide ? 320 : 160; state.image = Array.from({{length: 8}}, () => new Array(wide ? 16 : 8).fill(0));
    state.cursor = [3, 3]; window.onebyoneTimed(el, redraw); }};
  document.getElementById("cm-clear").addEventListener("click", blank);
  document.getElementById("cm-wide").addEventListener("input", blank);
  window.onebyoneTimed(el, redraw);
}})();
</script>"""


def branches(arrays) -> str:
    x, k3, k1 = np.asarray(arrays["x"]), np.asarray(arrays["k3"]), float(arrays["k1"])  # (12, 12), (3, 3)
    sliders = (("br-a", "3x3 branch"), ("br-b", "1x1 branch"), ("br-c", "identity"))
    controls = "\n".join(f'<label>{label} x <input type="range" id="{i}" min="-2" max="2" step="0.1" value="1">'
                         f'<output for="{i}" id="{i}-value">1</output></label>' for i, label in sliders)
    kernels = "".join(f'<figure class="exp-map"><canvas id="br-k-{n}" width="72" height="72" aria-label="{t}">'
                      f'</canvas><figcaption>{t}</figcaption></figure>'
                      for n, t in (("a", "3x3 kernel"), ("b", "1x1, as 3x3"), ("c", "identity, as 3x3"),
                                   ("sum", "= one kernel")))
    return f"""<div class="experiment" id="exp-branches">
<h3>Try it: three branches, one kernel</h3>
<p>Scale each branch: the 1x1 kernel and the identity are 3x3 kernels with a zero border, so their sum with
the 3x3 kernel is one kernel, and one convolution with it gives the sum of the three branches' outputs.</p>
{controls}
<div class="exp-row">{kernels}<figure class="exp-map"><canvas id="br-out" width="120" height="120"
aria-label="the output of the one merged convolution"></canvas><figcaption>one conv's output</figcaption></figure></div>
<p class="exp-readout" id="br-readout" aria-live="polite"></p>
</div>
<script>
(function () {{
  const x = {_json(x)}, k3 = {_json(k3)}, k1 = {k1!r}, H = x.length, W = x[0].length;
  const el = document.getElementById("exp-branches"), state = window.onebyone["branches"] = {{x: x, k3: k3, k1: k1}};
  const centre = (v) => [[0, 0, 0], [0, v, 0], [0, 0, 0]];
  const conv = (k) => Array.from({{length: H}}, (_, i) => Array.from({{length: W}}, (_, j) => {{
    let s = 0;  // a 3x3 conv with zero padding 1
    for (let di = -1; di <= 1; di++) for (let dj = -1; dj <= 1; dj++) {{
      const r = i + di, c = j + dj;
      if (r >= 0 && r < H && c >= 0 && c < W) s += k[di + 1][dj + 1] * x[r][c];
    }}
    return s;
  }}));
  function redraw() {{
    const [a, b, c] = ["br-a", "br-b", "br-c"].map((id) => Number(document.getElementById(id).value));
    ["br-a", "br-b", "br-c"].forEach((id) => document.getElementById(id + "-value").textContent =
      document.getElementById(id).value);
    const ka = k3.map((row) => row.map((v) => a * v)), kb = centre(b * k1), kc = centre(c);
    const merged = ka.map((row, i) => row.map((v, j) => v + kb[i][j] + kc[i][j]));
    const y = conv(merged), ya = conv(ka);
    const branchSum = ya.map((row, i) => row.map((v, j) => v + b * k1 * x[i][j] + c * x[i][j]));
    const diff = Math.max(...y.flat().map((v, i) => Math.abs(v - branchSum.flat()[i])));
    Object.assign(state, {{a: a, b: b, c: c, merged: merged, y: y, branchSum: branchSum, diff: diff}});
    const lim = Math.max(...[ka, kb, kc, merged].flat(2).map(Math.abs)) || 1;  // one scale: zero is one grey
    [["a", ka], ["b", kb], ["c", kc], ["sum", merged]].forEach(([n, k]) =>
      window.onebyoneDraw(document.getElementById("br-k-" + n), k.flat(), 3, 3, [-lim, lim]));
    window.onebyoneDraw(document.getElementById("br-out"), y.flat(), H, W);
    document.getElementById("br-readout").textContent = "centre of the merged kernel: " + merged[1][1].toFixed(3)
      + " = " + (a * k3[1][1]).toFixed(3) + " + " + (b * k1).toFixed(3) + " + " + c.toFixed(1)
      + "; largest difference between one conv and the three branches: " + diff.toExponential(1);
  }}
  window.onebyoneWire(el, ["br-a", "br-b", "br-c"], redraw);
}})();
</script>"""


EXPERIMENTS = {"one-channel": one_channel, "many-channels": many_channels, "nonlinearity": nonlinearity,
               "fc-as-conv": fc_as_conv, "class-maps": class_maps, "shared-mlp": shared_mlp, "bottleneck": bottleneck,
               "branches": branches}


def experiment(lesson) -> str:
    """The experiment's HTML and script for a lesson that has run, or "" for a lesson without one."""
    make = EXPERIMENTS.get(lesson.id)
    return make(lesson.arrays) if make is not None and lesson.arrays else ""
