(function () {
  const W1 = {{w1}}, b1 = {{b1}}, W2 = {{w2}}, b2 = {{b2}}, W3 = {{w3}}, b3 = {{b3}};
  const el = document.getElementById("exp-class-maps"), pad = document.getElementById("cm-draw");
  const state = window.onebyone["class-maps"] = {W1: W1, b1: b1, W2: W2, b2: b2, W3: W3, b3: b3,
                                                 image: {{image}}, cursor: [3, 3]};
  const dense = (W, b, v, relu) => W.map((row, o) => { const s = row.reduce((t, w, c) => t + w * v[c], b[o]);
                                                        return relu ? Math.max(0, s) : s; });
  function redraw() {
    const img = state.image, H = img.length, Wd = img[0].length;
    const maps = Array.from({length: 10}, () => Array.from({length: H}, () => new Array(Wd).fill(0)));
    for (let i = 0; i < H; i++) for (let j = 0; j < Wd; j++) {
      const patch = [];  // the 5 x 5 neighbourhood, zero padded, row by row (forms.im2col's order)
      for (let di = -2; di <= 2; di++) for (let dj = -2; dj <= 2; dj++) {
        const r = i + di, c = j + dj; patch.push(r >= 0 && r < H && c >= 0 && c < Wd ? img[r][c] : 0);
      }
      const out = dense(W3, b3, dense(W2, b2, dense(W1, b1, patch, true), true), false);  // the 1x1 head
      out.forEach((v, k) => { maps[k][i][j] = v; });
    }
    const scores = maps.map((m) => m.flat().reduce((s, v) => s + v, 0) / (H * Wd));  // the mean of each map
    Object.assign(state, {maps: maps, scores: scores});
    window.onebyoneDraw(pad, img.flat(), H, Wd);
    const ctx = pad.getContext("2d"), [ci, cj] = state.cursor;
    ctx.strokeStyle = "#1c7ed6"; ctx.strokeRect(cj * pad.width / Wd, ci * pad.height / H, pad.width / Wd, pad.height / H);
    const best = scores.indexOf(Math.max(...scores));
    maps.forEach((m, k) => {
      const cv = document.getElementById("cm-map-" + k); cv.width = 48 * Wd / 8;
      window.onebyoneDraw(cv, m.flat(), H, Wd);
      const cap = document.getElementById("cm-score-" + k);
      cap.textContent = k + ": " + scores[k].toFixed(2); cap.style.fontWeight = k === best ? "700" : "400";
    });
    document.getElementById("cm-readout").textContent = "the model reads " + best + " (score " + scores[best].toFixed(2)
      + ", the mean of map " + best + ")";
  }
  const ink = (i, j) => {
    const img = state.image;
    if (i < 0 || j < 0 || i >= img.length || j >= img[0].length) return;
    img[i][j] = 1;
    window.onebyoneTimed(el, redraw);
  };
  const cell = (e) => { const r = pad.getBoundingClientRect(), img = state.image;
    return [Math.floor((e.clientY - r.top) / r.height * img.length), Math.floor((e.clientX - r.left) / r.width * img[0].length)]; };
  let drawing = false;
  pad.addEventListener("pointerdown", (e) => { drawing = true; pad.setPointerCapture(e.pointerId); ink(...cell(e)); });
  pad.addEventListener("pointermove", (e) => { if (drawing) ink(...cell(e)); });
  pad.addEventListener("pointerup", () => { drawing = false; });
  pad.addEventListener("keydown", (e) => {
    const d = {ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1]}[e.key], img = state.image;
    if (d) { e.preventDefault(); state.cursor = [Math.min(img.length - 1, Math.max(0, state.cursor[0] + d[0])),
                                                  Math.min(img[0].length - 1, Math.max(0, state.cursor[1] + d[1]))];
             window.onebyoneTimed(el, redraw); }
    if (e.key === " ") { e.preventDefault(); ink(...state.cursor); }
  });
  const blank = () => { const wide = document.getElementById("cm-wide").checked;
    pad.width = wide ? 320 : 160; state.image = Array.from({length: 8}, () => new Array(wide ? 16 : 8).fill(0));
    state.cursor = [3, 3]; window.onebyoneTimed(el, redraw); };
  document.getElementById("cm-clear").addEventListener("click", blank);
  document.getElementById("cm-wide").addEventListener("input", blank);
  window.onebyoneTimed(el, redraw);
})();
