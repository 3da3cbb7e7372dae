(function () {
  const points = {{points}}, W1 = {{w1}}, b1 = {{b1}}, W2 = {{w2}}, b2 = {{b2}};
  const el = document.getElementById("exp-shared-mlp");
  const state = window.onebyone["shared-mlp"] = {points: points, W1: W1, b1: b1, W2: W2, b2: b2,
                                                 order: points.map((_, i) => i), shuffles: 0};
  const layer = (W, b, v) => W.map((row, o) => Math.max(0, row.reduce((s, w, c) => s + w * v[c], b[o])));
  let seed = 1;
  const random = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
  function redraw() {
    const cloud = state.order.map((i) => points[i]);
    const features = cloud.map((p) => layer(W2, b2, layer(W1, b1, p)));  // (N, 128): the same MLP at every point
    const pooled = features[0].map((_, c) => Math.max(...features.map((f) => f[c])));
    Object.assign(state, {features: features, pooled: pooled});
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
  }
  const run = window.onebyoneWire(el, ["sm-angle"], redraw);
  document.getElementById("sm-shuffle").addEventListener("click", () => {
    for (let i = state.order.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1)); [state.order[i], state.order[j]] = [state.order[j], state.order[i]];
    }
    state.shuffles += 1; run();
  });
})();
