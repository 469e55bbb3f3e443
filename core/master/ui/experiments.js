// #/experiments: every experiment with its state, progress, best metric and labels;
// filters (name, state, label, archived), sorting by any column, and pages of 25-200 rows
// (the API pages in SQL, so a master with thousands of experiments sends one page).
import { api } from "./api.js";
import { badge, fmtNumber, fmtTime, h, isLive, labels, progressBar, replace } from "./util.js";

// Kept across visits, so that coming back from an experiment keeps the filters.
const view = { name: "", state: "", label: "", archived: false, sortBy: "SORT_BY_ID", desc: true, page: 0, pageSize: 50 };
const PAGE_SIZES = [25, 50, 100, 200];

// Newest, furthest along and biggest first; names, states and best metric (best first) ascend.
const DESC_FIRST = new Set(["SORT_BY_ID", "SORT_BY_PROGRESS", "SORT_BY_NUM_TRIALS", "SORT_BY_START_TIME"]);
const STATES = ["ACTIVE", "PAUSED", "COMPLETED", "CANCELED", "ERROR"];
const COLUMNS = [
  { key: "id", title: "ID", sort: "SORT_BY_ID", num: true, cell: (s) => h("a", { href: `#/experiments/${s.experiment.id}` }, s.experiment.id) },
  { key: "name", title: "Name", sort: "SORT_BY_NAME", cell: (s) => h("a", { href: `#/experiments/${s.experiment.id}` }, s.experiment.name || "(no description)") },
  { key: "state", title: "State", sort: "SORT_BY_STATE", cell: (s) => badge(s.experiment.state) },
  { key: "progress", title: "Progress", sort: "SORT_BY_PROGRESS", cell: (s) => progressBar(s.experiment.progress) },
  { key: "trials", title: "Trials", sort: "SORT_BY_NUM_TRIALS", num: true, cell: (s) => s.experiment.numTrials },
  { key: "best", title: "Best metric", sort: "SORT_BY_BEST_METRIC", num: true, cell: bestCell },
  { key: "labels", title: "Labels", cell: (s) => labels(s.experiment.labels) },
  { key: "user", title: "User", sort: "SORT_BY_USER", cell: (s) => s.experiment.username },
  { key: "searcher", title: "Searcher", cell: (s) => s.experiment.searcherType },
  { key: "start", title: "Started", sort: "SORT_BY_START_TIME", cell: (s) => fmtTime(s.experiment.startTime) },
];

function bestCell(summary) {
  if (summary.bestMetric === null || summary.bestMetric === undefined) return h("span", { class: "muted" }, "–");
  return h("span", { title: `${summary.searcherMetric} (trial ${summary.bestTrialId})`, "data-value": summary.bestMetric },
    fmtNumber(summary.bestMetric), h("span", { class: "muted" }, ` ${summary.searcherMetric}`));
}

function query() {
  return {
    name: view.name,
    states: view.state ? [`STATE_${view.state}`] : [],
    labels: view.label ? [view.label] : [],
    archived: view.archived ? undefined : "false",
    sort_by: view.sortBy,
    order_by: view.desc ? "ORDER_BY_DESC" : "ORDER_BY_ASC",
    offset: view.page * view.pageSize,
    limit: view.pageSize,
  };
}

export async function experimentsPage(main, _params, ctx) {
  const body = h("div", {});
  const count = h("span", { class: "muted", "data-testid": "experiment-count" });
  const pager = h("div", { class: "pager", "data-testid": "pager" });
  let typing = null;
  let latest = 0; // answers to older queries (filters since changed) are dropped
  const refresh = async () => {
    const mine = ++latest;
    let answer = await api.experiments(query());
    const { total } = answer.pagination;
    if (view.page > 0 && view.page * view.pageSize >= total) {
      view.page = Math.max(0, Math.ceil(total / view.pageSize) - 1); // the list shrank under us
      answer = await api.experiments(query());
    }
    if (!ctx.alive) return false;
    if (mine !== latest) return true;
    replace(count, `${total} experiment${total === 1 ? "" : "s"}`);
    replace(body, render(answer.experiments, reload));
    replace(pager, renderPager(answer.pagination, reload));
    return answer.experiments.some((s) => isLive(s.experiment.state));
  };
  const reload = () => refresh().then((again) => again && ctx.poll(refresh));
  // A new filter or sort order starts again at the first page.
  const refilter = () => { view.page = 0; reload(); };
  const filters = h("div", { class: "filters" },
    h("input", { type: "search", placeholder: "Filter by name", value: view.name, "data-testid": "filter-name",
      oninput: (e) => { view.name = e.target.value; clearTimeout(typing); typing = setTimeout(refilter, 250); } }),
    h("select", { "data-testid": "filter-state", onchange: (e) => { view.state = e.target.value; refilter(); } },
      h("option", { value: "" }, "All states"),
      STATES.map((s) => h("option", { value: s, selected: view.state === s }, s.charAt(0) + s.slice(1).toLowerCase()))),
    h("input", { type: "search", placeholder: "Label", value: view.label, "data-testid": "filter-label",
      oninput: (e) => { view.label = e.target.value.trim(); clearTimeout(typing); typing = setTimeout(refilter, 250); } }),
    h("label", { class: "check" }, h("input", { type: "checkbox", checked: view.archived, onchange: (e) => { view.archived = e.target.checked; refilter(); } }), "Show archived"),
    count);
  replace(main,
    h("h1", {}, "Experiments"),
    h("div", { class: "subtitle" }, "Searches and their trials, newest first. Click a column to sort."),
    h("div", { class: "card" }, filters, body, pager));
  if (await refresh()) ctx.poll(refresh);
}

function render(summaries, reload) {
  if (!summaries.length) return h("div", { class: "empty", "data-testid": "experiments" }, "No experiments match.");
  const head = COLUMNS.map((c) => {
    const sorted = c.sort && c.sort === view.sortBy;
    return h("th", {
      class: [c.num ? "num" : "", c.sort ? "sortable" : "", sorted ? "sorted" : "", sorted && view.desc ? "desc" : ""].join(" ").trim(),
      "data-sort": c.sort,
      onclick: c.sort ? () => { view.desc = sorted ? !view.desc : DESC_FIRST.has(c.sort); view.sortBy = c.sort; view.page = 0; reload(); } : undefined,
    }, c.title);
  });
  return h("div", { class: "table-wrap" }, h("table", { "data-testid": "experiments" },
    h("thead", {}, h("tr", {}, head)),
    h("tbody", {}, summaries.map((s) => h("tr", { "data-id": s.experiment.id },
      COLUMNS.map((c) => h("td", { class: c.num ? "num" : "", "data-col": c.key }, c.cell(s))))))));
}

// "26-50 of 130", the previous and next pages, and the page size; nothing for a list that
// fits on the smallest page.
function renderPager(pagination, reload) {
  const { startIndex, endIndex, total } = pagination;
  if (total <= PAGE_SIZES[0] && view.page === 0) return [];
  const pages = Math.max(1, Math.ceil(total / view.pageSize));
  const go = (page) => () => { view.page = page; reload(); };
  return [
    h("button", { class: "btn secondary", "data-testid": "page-previous", disabled: view.page === 0, onclick: go(view.page - 1) }, "‹ Previous"),
    h("span", { class: "muted", "data-testid": "page-range" },
      total ? `${startIndex + 1}-${endIndex} of ${total}` : "0 of 0", ` · page ${view.page + 1} of ${pages}`),
    h("button", { class: "btn secondary", "data-testid": "page-next", disabled: view.page + 1 >= pages, onclick: go(view.page + 1) }, "Next ›"),
    h("select", { "data-testid": "page-size", onchange: (e) => { view.pageSize = Number(e.target.value); view.page = 0; reload(); } },
      PAGE_SIZES.map((n) => h("option", { value: n, selected: n === view.pageSize }, `${n} per page`))),
  ];
}
