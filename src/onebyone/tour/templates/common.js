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
