// onebyone.cost.conv_cost for a 2-D conv on one image, in exact integers (BigInt): the calculator and the
// tour's experiments share it
window.onebyoneConvCost = function (h, w, cin, cout, k, s, p, g) {
  function pads(size) {  // padding before and after one axis, as cost.pad_amounts
    if (p === "valid") return [0n, 0n];
    if (p === "same") {
      const out = (size + s - 1n) / s;
      let total = (out - 1n) * s + k - size;
      if (total < 0n) total = 0n;
      return [total / 2n, total - total / 2n];
    }
    if (!/^[0-9]+$/.test(p)) throw new Error("padding must be an integer >= 0, 'same' or 'valid', got '" + p + "'");
    return [BigInt(p), BigInt(p)];
  }
  function outSize(size) {  // as cost.conv_output_size
    const [lo, hi] = pads(size);
    if (k > size + lo + hi) throw new Error("kernel " + k + " is larger than the padded input " + (size + lo + hi));
    return (size + lo + hi - k) / s + 1n;
  }
  if (cin % g !== 0n || cout % g !== 0n)
    throw new Error("groups=" + g + " must divide both C_in=" + cin + " and C_out=" + cout);
  const ho = outSize(h), wo = outSize(w), perOutput = (cin / g) * k * k;  // MACs for one output value
  const macs = cout * ho * wo * perOutput;
  return {shape: "1 x " + cout + " x " + ho + " x " + wo, params: cout * perOutput + cout, macs: macs,
          flops: 2n * macs};
};
