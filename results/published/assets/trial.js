const LAYOUT = {"height": 360, "margin": {"t": 30}, "plot_bgcolor": "white", "xaxis": {"anchor": "y", "domain": [0.04, 0.46], "gridcolor": "#e8e8e8", "title": {"text": "step"}}, "xaxis2": {"anchor": "y2", "domain": [0.54, 0.96], "gridcolor": "#e8e8e8", "title": {"text": "step"}}, "yaxis": {"anchor": "x", "gridcolor": "#e8e8e8", "title": {"text": "loss"}}, "yaxis2": {"anchor": "x2", "gridcolor": "#e8e8e8", "title": {"text": "accuracy"}}};
const PANELS = [["", ["train_loss", "id_loss", "ood_loss"]], ["2", ["train_acc", "id_acc", "ood_acc", "oracle_acc"]]];
const byId = id => document.getElementById(id);
function facts(table, rows) {
  table.replaceChildren(...rows.map(([label, value]) => {
    const row = document.createElement("tr");
    row.append(document.createElement("th"), document.createElement("td"));
    row.cells[0].textContent = label;
    row.cells[1].textContent = value;
    return row;
  }));
}
window.shiftbenchTrials = trials => {
  const id = decodeURIComponent(location.hash.slice(1));
  const trial = trials[id];
  if (!trial) { byId("status").textContent = `no trial ${id} in this study`; return; }
  document.title = byId("title").textContent = trial.title;
  byId("status").textContent = trial.status + (trial.error ? ": " + trial.error : "");
  byId("status").className = trial.error ? "error" : "";
  const data = PANELS.flatMap(([axis, columns]) => columns.filter(c => c in trial.curves)
    .map(c => ({type: "scatter", mode: "lines+markers", name: c, x: trial.step,
                y: trial.curves[c], xaxis: "x" + axis, yaxis: "y" + axis})));
  Plotly.newPlot("curves", data, LAYOUT, {displaylogo: false, responsive: true});
  facts(byId("final"), trial.final);
  byId("config").textContent = JSON.stringify(trial.config, null, 2);
  facts(byId("provenance"), trial.provenance);
};
function load() {
  const id = decodeURIComponent(location.hash.slice(1));
  if (!/^[A-Za-z0-9_-]+$/.test(id)) { byId("status").textContent = "no trial named"; return; }
  const script = document.createElement("script");
  script.src = "trials/" + id.slice(0, 2) + ".js";
  script.onerror = () => { byId("status").textContent = `no trial ${id} in this study`; };
  document.head.append(script);
}
window.addEventListener("hashchange", load);
load();