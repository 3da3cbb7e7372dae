(function () {
  "use strict";
  const names = {h: "H", w: "W", cin: "C_in", cout: "C_out", k: "kernel", s: "stride", p: "padding", g: "groups"};
  const ids = Object.keys(names);
  const field = (id) => document.getElementById("calc-" + id);
  function int(id, min) {
    const raw = field(id).value.trim();
    if (!/^[0-9]+$/.test(raw) || Number(raw) < min)
      throw new Error(names[id] + " must be an integer >= " + min + ", got '" + raw + "'");
    return BigInt(raw);
  }
  function show(id, value) {
    const el = field(id);
    el.textContent = value === null ? "" : (typeof value === "bigint" ? value.toLocaleString("en-US") : value);
    el.dataset.value = value === null ? "" : String(value);
  }
  function update() {
    try {
      const c = window.onebyoneConvCost(int("h", 1), int("w", 1), int("cin", 1), int("cout", 1), int("k", 1),
                                        int("s", 1), field("p").value.trim(), int("g", 1));
      show("shape", c.shape);
      show("params", c.params);
      show("macs", c.macs);
      show("flops", c.flops);
      field("error").textContent = "";
    } catch (e) {
      ["shape", "params", "macs", "flops"].forEach((id) => show(id, null));
      field("error").textContent = e.message;
    }
  }
  ids.forEach((id) => field(id).addEventListener("input", update));
  update();
})();
