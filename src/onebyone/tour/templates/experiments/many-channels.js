(function () {
  const x = {{x}}, b = {{b}}, C = x.length, H = x[0].length, W = x[0][0].length, O = b.length;
  const el = document.getElementById("exp-many-channels"), input = document.getElementById("mc-in");
  const state = window.onebyone["many-channels"] = {x: x, b: b, pixel: [5, 7]};
  const weights = () => b.map((_, o) => x.map((_, c) => Number(document.getElementById("mc-w-" + o + "-" + c).value)));
  function redraw() {
    const w = weights(), [i, j] = state.pixel;
    const y = w.map((row, o) => Array.from({length: H}, (_, r) => Array.from({length: W}, (_, q) =>
      row.reduce((s, wc, c) => s + wc * x[c][r][q], b[o]))));
    const column = x.map((ch) => ch[i][j]);
    Object.assign(state, {w: w, y: y, column: column, product: y.map((m) => m[i][j])});
    window.onebyoneDraw(input, x[0].flat(), H, W);
    const ctx = input.getContext("2d"), sx = input.width / W, sy = input.height / H;
    ctx.strokeStyle = "#d9480f"; ctx.lineWidth = 2; ctx.strokeRect(j * sx, i * sy, sx, sy);
    y.forEach((m, o) => {
      const cv = document.getElementById("mc-out-" + o);
      window.onebyoneDraw(cv, m.flat(), H, W);
      const c2 = cv.getContext("2d"); c2.strokeStyle = "#d9480f"; c2.lineWidth = 2;
      c2.strokeRect(j * cv.width / W, i * cv.height / H, cv.width / W, cv.height / H);
    });
    document.getElementById("mc-readout").textContent = "pixel (" + i + ", " + j + "): x = ["
      + column.map((v) => v.toFixed(2)).join(", ") + "], W x + b = [" + state.product.map((v) => v.toFixed(2)).join(", ") + "]";
  }
  const pick = (i, j) => { state.pixel = [Math.min(H - 1, Math.max(0, i)), Math.min(W - 1, Math.max(0, j))];
                           window.onebyoneTimed(el, redraw); };
  input.addEventListener("mousemove", (e) => { const r = input.getBoundingClientRect();
    pick(Math.floor((e.clientY - r.top) / r.height * H), Math.floor((e.clientX - r.left) / r.width * W)); });
  input.addEventListener("keydown", (e) => {
    const d = {ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1]}[e.key];
    if (d) { e.preventDefault(); pick(state.pixel[0] + d[0], state.pixel[1] + d[1]); }
  });
  window.onebyoneWire(el, Array.from(el.querySelectorAll(".exp-matrix input")), redraw);
})();
