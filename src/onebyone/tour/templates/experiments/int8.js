(function () {
  const x = {{x}}, w = {{w}}, b = {{b}}, exact = {{exact}};  // x (C, H, W), w (O, C), exact (O, H, W)
  const el = document.getElementById("exp-int8"), state = window.onebyone["int8"] = {};
  const C = x.length, H = x[0].length, W = x[0][0].length, O = w.length;
  function grid(values, bits) {  // symmetric: q = round(a / s), s = max|a| / (2^(bits-1) - 1)
    const top = 2 ** (bits - 1) - 1, m = Math.max(...values.map(Math.abs)), s = m > 0 ? m / top : 1;
    return {s: s, q: values.map((v) => Math.max(-top, Math.min(top, Math.round(v / s))))};
  }
  function redraw() {
    const bits = Number(document.getElementById("q8-bits").value);
    const perChannel = document.getElementById("q8-per-channel").checked;
    document.getElementById("q8-bits-value").textContent = bits;
    const qx = grid(x.flat(2), bits);
    const qw = perChannel ? w.map((row) => grid(row, bits)) : (() => {
      const all = grid(w.flat(), bits);
      return w.map((row, o) => ({s: all.s, q: all.q.slice(o * C, (o + 1) * C)}));
    })();
    let worst = 0, scale = 0;
    const y = [];
    for (let o = 0; o < O; o++) {
      const plane = [];
      for (let h = 0; h < H; h++) {
        const row = [];
        for (let k = 0; k < W; k++) {
          let acc = 0;  // integers: exact in a double as in the CPU's int32
          for (let c = 0; c < C; c++) acc += qw[o].q[c] * qx.q[(c * H + h) * W + k];
          const v = qx.s * qw[o].s * acc + b[o];
          row.push(v);
          worst = Math.max(worst, Math.abs(v - exact[o][h][k]));
          scale = Math.max(scale, Math.abs(exact[o][h][k]));
        }
        plane.push(row);
      }
      y.push(plane);
    }
    Object.assign(state, {bits: bits, perChannel: perChannel, y: y, error: worst / scale});
    document.getElementById("q8-readout").textContent = bits + " bits, " + (perChannel ? "a scale per output channel"
      : "one scale for all weights") + ": max output error " + (100 * worst / scale).toFixed(3) + "% of the output scale";
  }
  window.onebyoneWire(el, ["q8-bits", "q8-per-channel"], redraw);
})();
