(function () {
  const x = {{x}}, w = {{w}}, b = {{b}}, el = document.getElementById("exp-fc-as-conv");
  const state = window.onebyone["fc-as-conv"] = {x: x, w: w, b: b}, flat = x.flat();
  function redraw() {
    const k = Number(document.getElementById("fc-unit").value), wk = w[k];
    document.getElementById("fc-unit-value").textContent = k;
    const dense = wk.reduce((s, v, i) => s + v * flat[i], b[k]);  // the dense layer: w . flatten(x) + b
    let full = b[k];  // (a) the 28 x 28 kernel laid on the image: one position, sum over rows and columns
    for (let r = 0; r < 28; r++) for (let c = 0; c < 28; c++) full += wk[28 * r + c] * x[r][c];
    const pixel = flat.slice();  // (b) the image as one pixel with 784 channels, then a 1 x 1 filter
    const pointwise = pixel.reduce((s, v, ch) => s + wk[ch] * v, b[k]);
    Object.assign(state, {unit: k, dense: dense, full: full, pointwise: pointwise});
    window.onebyoneDraw(document.getElementById("fc-kernel"), wk, 28, 28);
    window.onebyoneDraw(document.getElementById("fc-filter"), wk, 1, 784);
    document.getElementById("fc-readout").textContent = "unit " + k + ": dense " + dense.toFixed(6) + ", (a) 28 x 28 kernel "
      + full.toFixed(6) + ", (b) 1 x 1 x 784 filter " + pointwise.toFixed(6);
  }
  window.onebyoneWire(el, ["fc-unit"], redraw);
})();
