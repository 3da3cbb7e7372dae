(function () {
  const X = {{x}}, W1 = {{w1}}, W2 = {{w2}}, el = document.getElementById("exp-nonlinearity");
  const state = window.onebyone["nonlinearity"] = {X: X, W1: W1, W2: W2};
  const mul = (A, B) => A.map((row) => B[0].map((_, j) => row.reduce((s, a, k) => s + a * B[k][j], 0)));
  const T = (A) => A[0].map((_, j) => A.map((row) => row[j]));
  function solve(A, B) {  // A^-1 B by Gauss-Jordan elimination with partial pivoting (A is 3 x 3)
    const n = A.length, M = A.map((row, i) => row.concat(B[i]));
    for (let c = 0; c < n; c++) {
      let p = c; for (let r = c + 1; r < n; r++) if (Math.abs(M[r][c]) > Math.abs(M[p][c])) p = r;
      [M[c], M[p]] = [M[p], M[c]];
      for (let r = 0; r < n; r++) {
        if (r !== c) { const f = M[r][c] / M[c][c]; M[r] = M[r].map((v, j) => v - f * M[c][j]); }
      }
    }
    return M.map((row, i) => row.slice(n).map((v) => v / M[i][i]));
  }
  function redraw() {
    const relu = document.getElementById("nl-relu").checked;
    let H = mul(W1, X); if (relu) H = H.map((row) => row.map((v) => Math.max(v, 0)));
    const Y = mul(W2, H), merged = mul(W2, W1), Ym = mul(merged, X);
    const fit = T(solve(mul(X, T(X)), mul(X, T(Y))));  // the least-squares M with Y ~ M X
    const Yf = mul(fit, X);
    const gap = (A, B) => Math.max(...A.flat().map((v, i) => Math.abs(v - B.flat()[i])));
    Object.assign(state, {relu: relu, Y: Y, merged: merged, mergedGap: gap(Y, Ym), fit: fit,
                          fitResidual: gap(Y, Yf)});
    document.getElementById("nl-readout").textContent = relu
      ? "with the ReLU: the best single matrix misses the stack by up to " + state.fitResidual.toFixed(3)
      : "without it: W2 W1 = [" + merged.map((r) => r.map((v) => v.toFixed(2)).join(", ")).join("; ")
        + "] gives the stack's outputs to " + state.mergedGap.toExponential(1);
  }
  window.onebyoneWire(el, ["nl-relu"], redraw);
})();
