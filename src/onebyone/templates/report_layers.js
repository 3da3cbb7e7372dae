(function () {
  "use strict";
  const table = document.getElementById("layer-table"), body = table.tBodies[0];
  const kind = document.getElementById("layer-kind"), name = document.getElementById("layer-name");
  let order = {col: -1, dir: 1};
  function apply() {
    const k = kind.value, n = name.value.trim().toLowerCase();
    for (const row of body.rows) row.hidden = (k && row.dataset.kind !== k) || (n && !row.dataset.name.toLowerCase().includes(n));
    document.getElementById("layer-count").textContent = body.querySelectorAll("tr:not([hidden])").length + " of " + body.rows.length + " rows";
  }
  table.querySelectorAll("thead button").forEach((button, col) => button.addEventListener("click", () => {
    order = {col: col, dir: order.col === col ? -order.dir : (button.dataset.numeric ? -1 : 1)};
    const rows = Array.from(body.rows), key = (r) => r.cells[col].dataset.sort;
    rows.sort((a, b) => order.dir * (button.dataset.numeric ? Number(key(a)) - Number(key(b)) : key(a).localeCompare(key(b))));
    rows.forEach((r) => body.appendChild(r));
    table.querySelectorAll("thead th").forEach((th, i) => th.setAttribute("aria-sort", i === col ? (order.dir > 0 ? "ascending" : "descending") : "none"));
  }));
  document.querySelectorAll("#kind-bars button").forEach((b) => b.addEventListener("click", () => {
    kind.value = kind.value === b.dataset.kind ? "" : b.dataset.kind; apply();
    document.getElementById("layers").scrollIntoView();
  }));
  kind.addEventListener("input", apply); name.addEventListener("input", apply);
  window.onebyone = window.onebyone || {};
  window.onebyone.report = {visible: () => Array.from(body.rows).filter((r) => !r.hidden).map((r) => r.dataset.name)};
  apply();
})();
