(function () {
  const x = {{x}}, k3 = {{k3}}, k1 = {{k1}}, H = x.length, W = x[0].length;
  const el = document.getElementById("exp-branches"), state = window.onebyone["branches"] = {x: x, k3: k3, k1: k1};
  const centre = (v) => [[0, 0, 0], [0, v, 0], [0, 0, 0]];
  const conv = (k) => Array.from({length: H}, (_, i) => Array.from({length: W}, (_, j) => {
    let s = 0;  // a 3x3 conv with zero padding 1
    for (let di = -1; di <= 1; di++) for (let dj = -1; dj <= 1; dj++) {
      const r = i + di, c = j + dj;
      if (r >= 0 && r < H && c >= 0 && c < W) s += k[di + 1][dj + 1] * x[r][c];
    }
    return s;
  }));
  function redraw() {
    const [a, b, c] = ["br-a", "br-b", "br-c"].map((id) => Number(document.getElementById(id).value));
    ["br-a", "br-b", "br-c"].forEach((id) => document.getElementById(id + "-value").textContent =
      document.getElementById(id).value);
    const ka = k3.map((row) => row.map((v) => a * v)), kb = centre(b * k1), kc = centre(c);
    const merged = ka.map((row, i) => row.map((v, j) => v + kb[i][j] + kc[i][j]));
    const y = conv(merged), ya = conv(ka);
    const branchSum = ya.map((row, i) => row.map((v, j) => v + b * k1 * x[i][j] + c * x[i][j]));
    const diff = Math.max(...y.flat().map((v, i) => Math.abs(v - branchSum.flat()[i])));
    Object.assign(state, {a: a, b: b, c: c, merged: merged, y: y, branchSum: branchSum, diff: diff});
    const lim = Math.max(...[ka, kb, kc, merged].flat(2).map(Math.abs)) || 1;  // one scale: zero is one grey
    [["a", ka], ["b", kb], ["c", kc], ["sum", merged]].forEach(([n, k]) =>
      window.onebyoneDraw(document.getElementById("br-k-" + n), k.flat(), 3, 3, [-lim, lim]));
    window.onebyoneDraw(document.getElementById("br-out"), y.flat(), H, W);
    document.getElementById("br-readout").textContent = "centre of the merged kernel: " + merged[1][1].toFixed(3)
      + " = " + (a * k3[1][1]).toFixed(3) + " + " + (b * k1).toFixed(3) + " + " + c.toFixed(1)
      + "; largest difference between one conv and the three branches: " + diff.toExponential(1);
  }
  window.onebyoneWire(el, ["br-a", "br-b", "br-c"], redraw);
})();
