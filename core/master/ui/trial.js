// #/trials/{id}: the trial's hparams and metrics, its checkpoints (files, metadata, register
// as a model version) and its logs; refreshed every 2 s while the trial runs. The logs are
// never read whole: see logView.
import { api } from "./api.js";
import { emptyChart, lineChart } from "./charts.js";
import { flatHparams } from "./experiment.js";
import { registerForm } from "./models.js";
import { badge, fmtBytes, fmtDuration, fmtNumber, fmtTime, fmtValue, h, isLive, json, replace, shortState, stat } from "./util.js";

export async function trialPage(main, [id], ctx) {
  const header = h("div", {});
  const stats = h("div", { class: "stats" });
  const chart = h("div", { class: "chart", id: "trial-metrics", "data-testid": "trial-metrics" });
  const latestBox = h("div", {});
  const hparamsBox = h("div", {});
  const checkpointsBox = h("div", {});
  const logs = logView(id);
  let checkpointsKey = null;

  replace(main, header, stats,
    h("div", { class: "card" }, h("h2", {}, "Metrics"), chart),
    h("div", { class: "grid2" },
      h("div", { class: "card" }, h("h2", {}, "Latest validation"), latestBox),
      h("div", { class: "card" }, h("h2", {}, "Hyperparameters"), hparamsBox)),
    h("div", { class: "card" }, h("h2", {}, "Checkpoints"), checkpointsBox),
    logs.card);

  const refresh = async () => {
    const [{ trial }, training, validation, { checkpoints }] = await Promise.all([
      api.trial(id), api.trialSeries(id, "training"), api.trialSeries(id, "validation"),
      api.trialCheckpoints(id), logs.update(),
    ]);
    if (!ctx.alive) return false;
    const live = isLive(trial.state);
    replace(header,
      h("div", { class: "crumbs" }, h("a", { href: "#/experiments" }, "Experiments"), " / ",
        h("a", { href: `#/experiments/${trial.experimentId}` }, `Experiment ${trial.experimentId}`), " / ", `Trial ${trial.id}`),
      h("h1", { "data-testid": "trial-title" }, `Trial ${trial.id}`),
      h("div", { class: "subtitle" }, badge(trial.state), live ? h("span", { class: "live" }, "live") : null,
        h("span", {}, `started ${fmtTime(trial.startTime)}`), trial.endTime ? h("span", {}, `ended ${fmtTime(trial.endTime)}`) : null));
    replace(stats,
      stat("Batches", fmtNumber(trial.totalBatchesProcessed), "stat-batches"),
      stat("Restarts", String(trial.restarts), "stat-restarts"),
      stat("Duration", fmtDuration(trial.startTime, trial.endTime), "stat-duration"),
      stat("Checkpoints", String(checkpoints.length), "stat-checkpoints"));

    const lines = [
      ...training.series.map((s) => ({ name: `training ${s.metric}`, x: s.steps, y: s.values })),
      ...validation.series.map((s) => ({ name: `validation ${s.metric}`, x: s.steps, y: s.values })),
    ];
    chart.dataset.series = String(lines.length);
    if (lines.length) lineChart(chart, lines, { xTitle: "batches", yTitle: "value" });
    else emptyChart(chart, "No metrics reported yet.");

    const latest = trial.latestValidation;
    const latestMetrics = latest ? (latest.metrics.validation_metrics || latest.metrics) : {};
    replace(latestBox, latest
      ? h("dl", { class: "kv", "data-testid": "latest-validation" },
        h("dt", {}, "batches"), h("dd", {}, fmtNumber(latest.stepsCompleted)),
        Object.entries(latestMetrics).map(([k, v]) => [h("dt", {}, k), h("dd", { "data-metric": k }, fmtValue(v))]))
      : h("p", { class: "empty" }, "No validation yet."));
    replace(hparamsBox, h("dl", { class: "kv", "data-testid": "hparams" },
      Object.entries(flatHparams(trial.hparams)).map(([k, v]) => [h("dt", {}, k), h("dd", {}, fmtValue(v))]),
      h("dt", {}, "seed"), h("dd", {}, String(trial.seed))));

    // Re-render checkpoints only when they change, so an open register form survives polling.
    const key = JSON.stringify(checkpoints.map((c) => [c.uuid, c.state, c.searcherMetric, c.metadata]));
    if (key !== checkpointsKey) {
      checkpointsKey = key;
      // Newest first; those whose files are gone (garbage-collected) in brief, at the end.
      const ordered = [...checkpoints].sort((a, b) => b.batchNumber - a.batchNumber);
      const kept = ordered.filter((c) => shortState(c.state) !== "DELETED");
      const deleted = ordered.filter((c) => shortState(c.state) === "DELETED");
      replace(checkpointsBox, checkpoints.length
        ? h("div", { "data-testid": "checkpoints" }, kept.map((c) => checkpointCard(c, trial)),
          deleted.length ? h("div", { class: "table-wrap" }, h("table", { "data-testid": "deleted-checkpoints" },
            h("thead", {}, h("tr", {}, ["Deleted checkpoint", "Batch", "Searcher metric", "Saved"].map((t) => h("th", {}, t)))),
            h("tbody", {}, deleted.map((c) => h("tr", { "data-testid": "checkpoint", "data-uuid": c.uuid },
              h("td", {}, h("code", {}, c.uuid), " ", badge(c.state)), h("td", {}, fmtNumber(c.batchNumber)),
              h("td", {}, fmtNumber(c.searcherMetric)), h("td", {}, fmtTime(c.endTime))))))) : null)
        : h("p", { class: "empty" }, "No checkpoints yet."));
    }

    return live;
  };
  if (await refresh()) ctx.poll(refresh);
}

// The master answers log pages of at most 10,000 lines and 1 MiB of text. The view opens on
// the latest lines (a tail page), then follows new lines a few pages per refresh; while it
// follows the end it keeps at most MAX_SHOWN lines, dropping the oldest. "Show earlier
// lines" reads the page before the first line shown (`before`), on demand.
const TAIL_LINES = 1000;
const EARLIER_LINES = 1000;
const MAX_SHOWN = 5000;
const PAGES_PER_REFRESH = 4;

function logView(id) {
  const box = h("pre", { class: "logs", "data-testid": "logs" }, "No log lines yet.");
  const count = h("span", { class: "muted", "data-testid": "log-count" });
  const earlier = h("button", { class: "btn secondary", type: "button", "data-testid": "logs-earlier", hidden: true,
    onclick: () => loadEarlier() }, "Show earlier lines");
  let first = null; // the number of the first line shown; null until the first read
  let next = 0; // the number of the line after the last one shown
  let total = 0;
  let shown = 0;

  const render = () => {
    earlier.hidden = !(first > 0);
    const lines = `${shown.toLocaleString()} line${shown === 1 ? "" : "s"}`;
    replace(count, shown < total ? `${lines} of ${total.toLocaleString()}` : lines);
  };

  const append = (entries) => {
    if (!entries.length) return;
    const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    if (!shown) box.replaceChildren(); // the "no log lines" placeholder
    box.append(...entries.map(logLine));
    shown += entries.length;
    if (atBottom) {
      for (; shown > MAX_SHOWN; shown -= 1, first += 1) box.firstChild.remove();
      box.scrollTop = box.scrollHeight;
    }
  };

  const update = async () => {
    let page = await api.trialLogs(id, first === null ? { offset: -TAIL_LINES } : { offset: next });
    if (first === null) first = next = page.pagination.startIndex;
    for (let pages = 1; ; pages += 1) {
      if (page.pagination.startIndex !== next) break; // an earlier read is still in flight
      append(page.logs);
      next = page.pagination.endIndex;
      total = page.pagination.total;
      if (!page.logs.length || next >= total || pages >= PAGES_PER_REFRESH) break;
      page = await api.trialLogs(id, { offset: next });
    }
    render();
  };

  let loading = false;
  const loadEarlier = async () => {
    if (loading || !(first > 0)) return;
    loading = true;
    earlier.disabled = true;
    try {
      const before = first;
      const page = await api.trialLogs(id, { before, limit: EARLIER_LINES });
      if (first !== before || page.pagination.endIndex !== before) return; // trimmed meanwhile
      const height = box.scrollHeight;
      box.prepend(...page.logs.map(logLine));
      box.scrollTop += box.scrollHeight - height; // keep the lines in view where they were
      shown += page.logs.length;
      first = page.pagination.startIndex;
      render();
    } catch (error) {
      replace(count, `could not read earlier lines: ${error.message}`);
    } finally {
      loading = false;
      earlier.disabled = false;
    }
  };

  const card = h("div", { class: "card" },
    h("div", { class: "card-head" }, h("h2", {}, "Logs"), h("div", {}, earlier, " ", count)), box);
  return { card, update };
}

function logLine(entry) {
  return h("div", { class: `lvl-${entry.level || ""}`, "data-testid": "log-line" },
    h("span", { class: "ts" }, `${new Date(entry.timestamp).toISOString().replace("T", " ").slice(0, 19)} `),
    entry.level ? `${entry.level} ` : "",
    entry.trialRunId ? h("span", { class: "run", "data-testid": "log-run" }, `[run ${entry.trialRunId}] `) : "",
    entry.rank !== null && entry.rank !== undefined ? `[rank ${entry.rank}] ` : "",
    entry.message.replace(/\n$/, ""));
}

function checkpointCard(ckpt, trial) {
  const files = Object.entries(ckpt.files || {}).sort(([a], [b]) => a.localeCompare(b));
  const validation = ckpt.metrics ? ckpt.metrics.validationMetrics : null;
  const register = h("div", {});
  const best = trial.bestCheckpoint && trial.bestCheckpoint.uuid === ckpt.uuid;
  return h("div", { class: "card checkpoint", "data-testid": "checkpoint", "data-uuid": ckpt.uuid },
    h("div", { class: "card-head" },
      h("div", {}, h("code", { "data-testid": "checkpoint-uuid" }, ckpt.uuid), " ", badge(ckpt.state),
        best ? h("span", { class: "chip", style: { marginLeft: "6px" } }, "best") : null),
      shortState(ckpt.state) === "COMPLETED"
        ? h("button", { class: "btn secondary", type: "button", "data-testid": "register-open",
          onclick: (e) => { e.target.disabled = true; replace(register, registerForm(ckpt.uuid)); } }, "Register as model version")
        : null),
    h("dl", { class: "kv" },
      h("dt", {}, "batch"), h("dd", {}, fmtNumber(ckpt.batchNumber)),
      h("dt", {}, "saved"), h("dd", {}, fmtTime(ckpt.endTime)),
      h("dt", {}, "searcher metric"), h("dd", {}, fmtNumber(ckpt.searcherMetric)),
      h("dt", {}, "framework"), h("dd", {}, `${ckpt.framework || "–"} / ${ckpt.format || "–"}`),
      validation ? [h("dt", {}, "validation"), h("dd", {}, Object.entries(validation).map(([k, v]) => `${k}=${fmtValue(v)}`).join(", "))] : null),
    h("div", { class: "grid2", style: { marginTop: "12px" } },
      h("div", {}, h("h2", {}, `Files (${files.length})`),
        h("ul", { class: "files", "data-testid": "checkpoint-files" }, files.map(([path, entry]) =>
          h("li", {}, h("code", {}, path), h("span", { class: "muted" }, fmtBytes(entry.size)))))),
      h("div", {}, h("h2", {}, "Metadata"), h("div", { "data-testid": "checkpoint-metadata" }, json(ckpt.metadata || {})))),
    register);
}
