// #/experiments/{id}: the experiment's summary, its trials, the learning curves of all trials
// together, the Pareto front of a multi-objective search, and the hyperparameter views
// (parallel coordinates, metric against one hparam).
import { api } from "./api.js";
import { emptyChart, lineChart, paretoChart, parcoords, scatter } from "./charts.js";
import {
  badge, fmtDuration, fmtNumber, fmtTime, fmtValue, h, isLive, json, labels, progressBar, replace, stat, table,
} from "./util.js";

// Nested hparams ({"optimizer": {"lr": 0.1}}) are shown flat ("optimizer.lr").
export function flatHparams(hparams, prefix = "") {
  const out = {};
  for (const [key, value] of Object.entries(hparams || {})) {
    if (value !== null && typeof value === "object" && !Array.isArray(value)) Object.assign(out, flatHparams(value, `${prefix}${key}.`));
    else out[`${prefix}${key}`] = value;
  }
  return out;
}

function metricOf(row, name) {
  if (!row || !name) return null;
  const metrics = row.metrics && row.metrics.validation_metrics ? row.metrics.validation_metrics : row.metrics || {};
  const value = metrics[name];
  return typeof value === "number" ? value : null;
}

// Options are rebuilt only when they change, so that polling never closes an open list.
function setOptions(select, values, chosen, label) {
  const key = JSON.stringify(values);
  if (select.dataset.options !== key) {
    select.dataset.options = key;
    replace(select, values.map((v) => h("option", { value: v }, label(v))));
  }
  if (chosen !== null) select.value = chosen;
}

export async function experimentPage(main, [id], ctx) {
  const state = { choice: null, hparam: null };
  const header = h("div", {});
  const stats = h("div", { class: "stats" });
  const curvesChart = h("div", { class: "chart", id: "learning-curves", "data-testid": "learning-curves" });
  const metricSelect = h("select", { "data-testid": "curve-metric", onchange: (e) => { state.choice = e.target.value; draw(); } });
  const parcoordsChart = h("div", { class: "chart", id: "hp-parcoords", "data-testid": "hp-parcoords" });
  const scatterChart = h("div", { class: "chart small", id: "hp-scatter", "data-testid": "hp-scatter" });
  const hparamSelect = h("select", { "data-testid": "scatter-hparam", onchange: (e) => { state.hparam = e.target.value; draw(); } });
  const trialsBox = h("div", {});
  const paretoChartBox = h("div", { class: "chart", id: "pareto-front", "data-testid": "pareto-front" });
  const paretoTable = h("div", {});
  const paretoCard = h("div", { class: "card", hidden: true, "data-testid": "pareto-card" },
    h("h2", {}, "Pareto front"), paretoChartBox, paretoTable);
  const configBox = h("details", {}, h("summary", {}, "Configuration"));
  let data = null;

  replace(main, header, stats,
    h("div", { class: "card" }, h("div", { class: "card-head" }, h("h2", {}, "Learning curves"), metricSelect), curvesChart),
    paretoCard,
    h("div", { class: "card" }, h("h2", {}, "Trials"), trialsBox),
    h("div", { class: "grid2" },
      h("div", { class: "card" }, h("h2", {}, "Hyperparameters: parallel coordinates"), parcoordsChart),
      h("div", { class: "card" }, h("div", { class: "card-head" }, h("h2", {}, "Metric against a hyperparameter"), hparamSelect), scatterChart)),
    h("div", { class: "card" }, configBox));

  function draw() {
    const { experiment, config, trials, training, validation, pareto } = data;
    const searcher = config.searcher || {};
    const metric = searcher.metric;
    const live = isLive(experiment.state);
    replace(header,
      h("div", { class: "crumbs" }, h("a", { href: "#/experiments" }, "Experiments"), " / ", `Experiment ${experiment.id}`),
      h("h1", { "data-testid": "experiment-title" }, `Experiment ${experiment.id}`, experiment.name ? ` · ${experiment.name}` : ""),
      h("div", { class: "subtitle" }, badge(experiment.state), live ? h("span", { class: "live" }, "live") : null,
        h("span", {}, `by ${experiment.username}`), h("span", {}, `started ${fmtTime(experiment.startTime)}`),
        experiment.endTime ? h("span", {}, `ended ${fmtTime(experiment.endTime)}`) : null, labels(experiment.labels)));

    const best = trials
      .map((t) => ({ trial: t, value: metricOf(t.bestValidation, metric) }))
      .filter((b) => b.value !== null)
      .sort((a, b) => (searcher.smaller_is_better === false ? b.value - a.value : a.value - b.value))[0];
    replace(stats,
      stat("Trials", String(trials.length), "stat-trials"),
      stat("Progress", progressBar(experiment.progress), "stat-progress"),
      stat(`Best ${metric || "metric"}`, best ? h("span", {}, fmtNumber(best.value), h("span", { class: "muted" }, ` trial ${best.trial.id}`)) : "–", "stat-best"),
      stat("Searcher", `${experiment.searcherType}${searcher.smaller_is_better === false ? " (max)" : ""}`, "stat-searcher"));

    // Learning curves: one line per trial for the chosen (kind, metric).
    const choices = [
      ...validation.metrics.map((m) => `validation:${m}`),
      ...training.metrics.map((m) => `training:${m}`),
    ];
    if (!choices.includes(state.choice)) state.choice = choices.includes(`validation:${metric}`) ? `validation:${metric}` : choices[0] || null;
    setOptions(metricSelect, choices, state.choice, (c) => c.replace(":", " · "));
    if (state.choice) {
      const [kind, name] = state.choice.split(/:(.*)/s);
      const source = kind === "validation" ? validation : training;
      const lines = source.series.filter((s) => s.metric === name).map((s) => ({ name: `Trial ${s.trialId}`, x: s.steps, y: s.values }));
      curvesChart.dataset.series = String(lines.length);
      lineChart(curvesChart, lines, { xTitle: "batches", yTitle: `${kind} ${name}` });
    } else {
      curvesChart.dataset.series = "0";
      emptyChart(curvesChart, "No metrics reported yet.");
    }

    // A multi-objective search: its trials in the plane of the first two objectives, and the
    // trials on the front with every objective.
    paretoCard.hidden = pareto.objectives.length < 2;
    if (!paretoCard.hidden) {
      const front = pareto.points.filter((p) => p.onFront);
      paretoChartBox.dataset.front = String(front.length);
      if (pareto.points.length) paretoChart(paretoChartBox, pareto.points, pareto.objectives);
      else emptyChart(paretoChartBox, "No trial has validated every objective yet.");
      const frontColumns = [
        { key: "id", title: "Trial", cell: (p) => h("a", { href: `#/trials/${p.trialId}` }, `Trial ${p.trialId}`) },
        ...pareto.objectives.map((o, i) => ({ key: `objective:${i}`, title: `${o.metric} (${o.smallerIsBetter ? "min" : "max"})`, num: true, cell: (p) => fmtNumber(p.values[i]) })),
        { key: "batches", title: "Batches", num: true, cell: (p) => fmtNumber(p.batches) },
      ];
      replace(paretoTable, table(frontColumns, front.map((p) => ({ ...p, id: p.trialId })), { testid: "pareto-trials", empty: "No front yet." }));
    }

    // Trials table.
    const names = [...new Set(trials.flatMap((t) => Object.keys(flatHparams(t.hparams))))].sort();
    const columns = [
      { key: "id", title: "Trial", cell: (t) => h("a", { href: `#/trials/${t.id}` }, `Trial ${t.id}`) },
      { key: "state", title: "State", cell: (t) => [badge(t.state),
        t.lastError ? h("div", { class: "error-line", title: t.lastError, "data-testid": "trial-error" }, t.lastError) : null] },
      { key: "batches", title: "Batches", num: true, cell: (t) => fmtNumber(t.totalBatchesProcessed) },
      { key: "best", title: `Best ${metric || ""}`, num: true, cell: (t) => fmtNumber(metricOf(t.bestValidation, metric)) },
      { key: "latest", title: `Latest ${metric || ""}`, num: true, cell: (t) => fmtNumber(metricOf(t.latestValidation, metric)) },
      ...names.map((n) => ({ key: `hp:${n}`, title: n, num: true, cell: (t) => fmtValue(flatHparams(t.hparams)[n]) })),
      { key: "restarts", title: "Restarts", num: true, cell: (t) => t.restarts },
      { key: "duration", title: "Duration", cell: (t) => fmtDuration(t.startTime, t.endTime) },
    ];
    replace(trialsBox, table(columns, trials, { testid: "trials", empty: "No trials yet." }));

    // Hyperparameter views: the hparams the search varied (all, if none varied yet); numeric
    // ones as they are, others as categories.
    const flat = trials.map((t) => flatHparams(t.hparams));
    const varied = names.filter((n) => new Set(flat.map((f) => JSON.stringify(f[n]))).size > 1);
    const shown = varied.length ? varied : names;
    const dims = shown.map((n) => {
      const values = flat.map((f) => f[n]);
      if (values.every((v) => typeof v === "number")) return { label: n, values };
      const categories = [...new Set(values.map((v) => fmtValue(v)))].sort();
      return { label: n, values: values.map((v) => categories.indexOf(fmtValue(v))), ticktext: categories };
    });
    const metricValues = trials.map((t) => metricOf(t.bestValidation, metric));
    if (metric && metricValues.some((v) => v !== null)) {
      dims.push({ label: metric, values: metricValues.map((v) => (v === null ? NaN : v)) });
    }
    if (dims.length) parcoords(parcoordsChart, dims, metricValues, metric);
    else emptyChart(parcoordsChart, "No hyperparameters.");

    if (!names.includes(state.hparam)) state.hparam = shown[0] || null;
    setOptions(hparamSelect, names, state.hparam, (n) => n);
    const points = trials
      .map((t, i) => ({ x: flat[i][state.hparam], y: metricValues[i], label: `Trial ${t.id}` }))
      .filter((p) => p.y !== null && p.x !== undefined);
    if (state.hparam && points.length) scatter(scatterChart, points, { xTitle: state.hparam, yTitle: `best ${metric}` });
    else emptyChart(scatterChart, "No validated trials yet.");

    if (configBox.childNodes.length === 1) configBox.append(json(config));
  }

  const refresh = async () => {
    const [{ experiment, config }, { trials }, training, validation, pareto] = await Promise.all([
      api.experiment(id), api.trials(id), api.experimentSeries(id, "training"), api.experimentSeries(id, "validation"),
      api.paretoFront(id),
    ]);
    if (!ctx.alive) return false;
    data = { experiment, config, trials, training, validation, pareto };
    draw();
    return isLive(experiment.state) || trials.some((t) => isLive(t.state));
  };
  if (await refresh()) ctx.poll(refresh);
}
