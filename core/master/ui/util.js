// DOM building and formatting helpers shared by the pages.

// h("a", {href: "#/x", class: "y"}, "text", child...) -- text children become text nodes,
// so nothing from the API is ever parsed as HTML.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "style" && typeof value === "object") Object.assign(el.style, value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function shortState(state) {
  return String(state || "").replace(/^STATE_/, "");
}

export function badge(state) {
  const name = shortState(state);
  return h("span", { class: `badge ${name}`, "data-state": name }, name.replace(/_/g, " "));
}

export const ENDED = new Set(["COMPLETED", "CANCELED", "ERROR", "DELETED", "DELETE_FAILED"]);

export function isLive(state) {
  return !ENDED.has(shortState(state)) && shortState(state) !== "PAUSED";
}

export function fmtNumber(value, digits = 4) {
  if (value === null || value === undefined || value === "") return "–";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) return value.toExponential(3);
  return value.toPrecision(digits).replace(/\.?0+$/, "");
}

export function fmtTime(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return date.toLocaleString("en-GB", { year: "numeric", month: "short", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function fmtDuration(startIso, endIso) {
  if (!startIso) return "–";
  const seconds = Math.max(0, ((endIso ? new Date(endIso) : new Date()) - new Date(startIso)) / 1000);
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} m ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} m`;
}

export function fmtBytes(size) {
  if (size < 1024) return `${size} B`;
  if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KiB`;
  return `${(size / 1024 / 1024).toFixed(1)} MiB`;
}

export function fmtValue(value) {
  if (typeof value === "number") return fmtNumber(value);
  if (value !== null && typeof value === "object") return JSON.stringify(value);
  return value === undefined || value === null ? "–" : String(value);
}

export function progressBar(progress) {
  if (progress === null || progress === undefined) return h("span", { class: "muted" }, "–");
  const pct = Math.round(Math.max(0, Math.min(1, progress)) * 100);
  return h("span", { "data-progress": pct },
    h("span", { class: "progress" }, h("div", { style: { width: `${pct}%` } })), `${pct}%`);
}

export function labels(list) {
  return (list || []).map((label) => h("span", { class: "chip" }, label));
}

export function table(columns, rows, { testid, empty = "Nothing here yet." } = {}) {
  if (!rows.length) return h("div", { class: "empty", "data-testid": testid }, empty);
  return h("div", { class: "table-wrap" },
    h("table", { "data-testid": testid },
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : "" }, c.title)))),
      h("tbody", {}, rows.map((row) =>
        h("tr", { "data-id": row.id ?? "" }, columns.map((c) => h("td", { class: c.num ? "num" : "", "data-col": c.key }, c.cell(row))))))));
}

export function json(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

export function stat(label, value, testid) {
  return h("div", { class: "stat" }, h("div", { class: "label" }, label), h("div", { class: "value", "data-testid": testid }, value));
}
