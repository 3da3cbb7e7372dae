(function () {
  const el = document.getElementById("exp-bottleneck"), state = window.onebyone["bottleneck"] = {};
  const v = (id) => BigInt(document.getElementById(id).value);
  function redraw() {
    const cin = v("bn-cin"), r = v("bn-r"), cout = v("bn-cout"), k = v("bn-k");
    ["bn-cin", "bn-r", "bn-cout", "bn-k"].forEach((id) => document.getElementById(id + "-value").textContent =
      document.getElementById(id).value);
    const cost = window.onebyoneConvCost;
    const direct = cost(28n, 28n, cin, cout, k, 1n, "same", 1n);
    const reduce = cost(28n, 28n, cin, r, 1n, 1n, "0", 1n), after = cost(28n, 28n, r, cout, k, 1n, "same", 1n);
    const pair = {macs: reduce.macs + after.macs, params: reduce.params + after.params};
    Object.assign(state, {cin: cin, r: r, cout: cout, k: k, direct: direct, pair: pair,
                          ratio: Number(direct.macs) / Number(pair.macs)});
    document.getElementById("bn-readout").textContent = "direct: " + direct.macs.toLocaleString("en-US") + " MACs, "
      + direct.params.toLocaleString("en-US") + " parameters; 1x1 then k x k: " + pair.macs.toLocaleString("en-US")
      + " MACs, " + pair.params.toLocaleString("en-US") + " parameters; ratio " + state.ratio.toFixed(2) + "x";
  }
  window.onebyoneWire(el, ["bn-cin", "bn-r", "bn-cout", "bn-k"], redraw);
})();
