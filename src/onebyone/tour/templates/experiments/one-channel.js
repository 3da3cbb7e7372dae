(function () {
  const x = {{x}}, x2 = {{x2}}, rows = x.length, cols = x[0].length;
  const flat = x.flat(), flat2 = x2.flat(), el = document.getElementById("exp-one-channel");
  const state = window.onebyone["one-channel"] = {x: x, x2: x2};
  function redraw() {
    const w = Number(document.getElementById("oc-w").value), b = Number(document.getElementById("oc-b").value);
    const second = document.getElementById("oc-second").checked;
    const y = flat.map((v, i) => w * v + b + (second ? 0.7 * flat2[i] : 0));
    // the best straight line y ~ a x + c through the scatter, and the largest distance from it
    const n = y.length, mx = flat.reduce((s, v) => s + v, 0) / n, my = y.reduce((s, v) => s + v, 0) / n;
    let sxy = 0, sxx = 0;
    flat.forEach((v, i) => { sxy += (v - mx) * (y[i] - my); sxx += (v - mx) * (v - mx); });
    const a = sxy / sxx, c = my - a * mx;
    const off = Math.max(...y.map((v, i) => Math.abs(v - (a * flat[i] + c))));
    Object.assign(state, {w: w, b: b, second: second, y: y, slope: a, intercept: c, offLine: off});
    window.onebyoneDraw(document.getElementById("oc-map"), y, rows, cols);
    const sc = document.getElementById("oc-scatter"), ctx = sc.getContext("2d");
    const lo = Math.min(...y), hi = Math.max(...y), span = hi - lo || 1;
    ctx.clearRect(0, 0, sc.width, sc.height); ctx.fillStyle = "#d9480f";
    flat.forEach((v, i) => ctx.fillRect(4 + v * (sc.width - 8),
                                        sc.height - 4 - (y[i] - lo) / span * (sc.height - 8), 2, 2));
    document.getElementById("oc-readout").textContent = "output = " + w.toFixed(2) + " x input + " + b.toFixed(2)
      + (second ? " + 0.7 x second channel" : "") + "; farthest point from the best straight line: "
      + off.toExponential(2);
  }
  window.onebyoneWire(el, ["oc-w", "oc-b", "oc-second"], redraw);
})();
