// Plotly.js charts (the copy shipped by the `plotly` Python package, served by the master).
import { h } from "./util.js";

const FONT = { family: "-apple-system, 'Segoe UI', Roboto, Arial, sans-serif", size: 12, color: "#1d2330" };
const CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };

function layout(extra) {
  return {
    font: FONT,
    margin: { l: 60, r: 20, t: 10, b: 50 },
    paper_bgcolor: "#fff",
    plot_bgcolor: "#fff",
    hovermode: "closest",
    legend: { orientation: "h", y: -0.2 },
    ...extra,
  };
}

function axis(title) {
  return { title: { text: title }, gridcolor: "#edf0f5", zerolinecolor: "#d9dee8" };
}

function unavailable(el) {
  el.replaceChildren(h("p", { class: "error" }, "Charts are unavailable: Plotly.js did not load (pip install plotly on the master)."));
  return false;
}

// A message where a chart would be (nothing to draw yet); the next draw replaces it.
export function emptyChart(el, text) {
  if (window.Plotly) window.Plotly.purge(el);
  el.replaceChildren(h("p", { class: "empty" }, text));
  el.dataset.placeholder = "1";
}

function ready(el) {
  if (!window.Plotly) return unavailable(el);
  if (el.dataset.placeholder) {
    el.replaceChildren();
    delete el.dataset.placeholder;
  }
  return true;
}

// series: [{name, x: [...], y: [...]}], one line per entry.
export function lineChart(el, series, { xTitle = "batches", yTitle = "" } = {}) {
  if (!ready(el)) return false;
  const data = series.map((s) => ({ type: "scatter", mode: "lines+markers", name: s.name, x: s.x, y: s.y, marker: { size: 5 }, line: { width: 2 } }));
  const showLegend = data.length <= 20;
  window.Plotly.react(el, data, layout({ xaxis: axis(xTitle), yaxis: axis(yTitle), showlegend: showLegend }), CONFIG);
  return true;
}

// dimensions: [{label, values, ticktext?}] -- categorical values are given as indices.
export function parcoords(el, dimensions, colorValues, colorTitle) {
  if (!ready(el)) return false;
  const hasColor = colorValues && colorValues.some((v) => v !== null && v !== undefined);
  const line = hasColor
    ? { color: colorValues.map((v) => (v === null || v === undefined ? NaN : v)), colorscale: "Viridis", showscale: true, colorbar: { title: { text: colorTitle, side: "right" }, x: 1.08, thickness: 14 } }
    : { color: "#2f5bd3" };
  const dims = dimensions.map((d) => {
    const dim = { label: d.label, values: d.values };
    if (d.ticktext) {
      dim.tickvals = d.ticktext.map((_, i) => i);
      dim.ticktext = d.ticktext;
    }
    return dim;
  });
  window.Plotly.react(el, [{ type: "parcoords", line, dimensions: dims }], layout({ margin: { l: 60, r: 110, t: 50, b: 30 } }), CONFIG);
  return true;
}

export function scatter(el, points, { xTitle, yTitle }) {
  if (!ready(el)) return false;
  const data = [{
    type: "scatter", mode: "markers", x: points.map((p) => p.x), y: points.map((p) => p.y),
    text: points.map((p) => p.label), hovertemplate: "%{text}<br>%{x}: %{y}<extra></extra>",
    marker: { size: 10, color: "#2f5bd3", opacity: 0.8, line: { color: "#fff", width: 1 } },
  }];
  window.Plotly.react(el, data, layout({ xaxis: axis(xTitle), yaxis: axis(yTitle), showlegend: false }), CONFIG);
  return true;
}

// A multi-objective search's trials in the plane of its first two objectives, the Pareto
// front drawn as a line through its points (ordered along the x objective).
export function paretoChart(el, points, objectives) {
  if (!ready(el)) return false;
  const [xName, yName] = objectives.map((o) => `${o.metric} (${o.smallerIsBetter ? "min" : "max"})`);
  const trace = (subset, name, color, mode) => ({
    type: "scatter", mode, name, x: subset.map((p) => p.values[0]), y: subset.map((p) => p.values[1]),
    text: subset.map((p) => `Trial ${p.trialId}`), hovertemplate: "%{text}<br>%{x}, %{y}<extra></extra>",
    marker: { size: 10, color, opacity: 0.85, line: { color: "#fff", width: 1 } }, line: { color, width: 2, shape: "hv" },
  });
  const front = points.filter((p) => p.onFront).sort((a, b) => a.values[0] - b.values[0]);
  const rest = points.filter((p) => !p.onFront);
  const data = [trace(rest, "dominated", "#9aa3b5", "markers"), trace(front, "Pareto front", "#d3452f", "lines+markers")];
  window.Plotly.react(el, data, layout({ xaxis: axis(xName), yaxis: axis(yName), showlegend: true }), CONFIG);
  return true;
}
