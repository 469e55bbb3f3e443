// The single page: a hash router (#/experiments, #/experiments/3, #/trials/7, #/models,
// #/models/name), the login form, the polling that keeps live pages current, and the
// cluster banner (the master's resource manager disconnected: nothing is being launched).
import { api, ApiError, login, logout, session } from "./api.js";
import { experimentsPage } from "./experiments.js";
import { experimentPage } from "./experiment.js";
import { trialPage } from "./trial.js";
import { modelPage, modelsPage } from "./models.js";
import { h, replace } from "./util.js";

const POLL_MS = 2000;
const MASTER_POLL_MS = 5000;

const ROUTES = [
  [/^\/?$/, () => experimentsPage, "experiments"],
  [/^\/experiments\/?$/, () => experimentsPage, "experiments"],
  [/^\/experiments\/(\d+)$/, () => experimentPage, "experiments"],
  [/^\/trials\/(\d+)$/, () => trialPage, "experiments"],
  [/^\/models\/?$/, () => modelsPage, "models"],
  [/^\/models\/(.+)$/, () => modelPage, "models"],
];

const main = document.getElementById("main");
let current = null; // the page's context: {alive, timer}
let masterTimer = null;

// Each page gets a context; `poll(fn)` calls fn every POLL_MS until fn returns false or the
// page is left. A failed refresh is shown in the banner and retried.
function newContext() {
  const ctx = { alive: true, timer: null };
  ctx.poll = (refresh) => {
    clearTimeout(ctx.timer);
    const tick = async () => {
      if (!ctx.alive) return;
      let again = true;
      try {
        again = await refresh();
        showBanner("");
      } catch (error) {
        if (error instanceof ApiError && error.status === 401) return;
        showBanner(`Refresh failed: ${error.message}`);
      }
      if (again !== false && ctx.alive) ctx.timer = setTimeout(tick, POLL_MS);
    };
    ctx.timer = setTimeout(tick, POLL_MS);
  };
  return ctx;
}

function showBanner(text, id = "banner") {
  const banner = document.getElementById(id);
  banner.textContent = text;
  banner.hidden = !text;
}

// Whatever the page, while someone is logged in: GET /api/v1/master every MASTER_POLL_MS,
// and the cluster banner while its resource manager is disconnected. A failed look leaves
// the banner as it was (the page's own refresh reports failures).
async function watchMaster() {
  clearTimeout(masterTimer);
  if (!session()) {
    showBanner("", "cluster-banner");
    return;
  }
  try {
    const rm = (await api.master()).resourceManager;
    showBanner(rm.status === "disconnected" ? `No trials are being launched: ${rm.message}` : "", "cluster-banner");
  } catch {
    // kept as it was
  }
  masterTimer = setTimeout(watchMaster, MASTER_POLL_MS);
}

async function route() {
  if (current) {
    current.alive = false;
    clearTimeout(current.timer);
  }
  const me = session();
  document.getElementById("nav").hidden = !me;
  document.getElementById("session").hidden = !me;
  watchMaster();
  if (!me) {
    renderLogin();
    return;
  }
  document.getElementById("whoami").textContent = me.username;
  const path = decodeURIComponent(window.location.hash.replace(/^#/, "").split("?")[0]);
  for (const [pattern, page, section] of ROUTES) {
    const match = pattern.exec(path);
    if (!match) continue;
    for (const link of document.querySelectorAll("#nav a")) {
      link.classList.toggle("current", link.dataset.section === section);
    }
    const ctx = newContext();
    current = ctx;
    showBanner("");
    replace(main, h("p", { class: "muted" }, "Loading…"));
    try {
      await page()(main, match.slice(1), ctx);
    } catch (error) {
      if (!ctx.alive || (error instanceof ApiError && error.status === 401)) return;
      replace(main, h("div", { class: "card" }, h("h1", {}, "Could not load this page"),
        h("p", { class: "error", "data-testid": "page-error" }, error.message)));
    }
    return;
  }
  replace(main, h("div", { class: "card" }, h("h1", {}, "Not found"),
    h("p", {}, "No page at ", h("code", {}, path), ". ", h("a", { href: "#/experiments" }, "Experiments"))));
}

function renderLogin() {
  const error = h("p", { class: "error", "data-testid": "login-error" });
  const username = h("input", { name: "username", autocomplete: "username", required: true, placeholder: "determined" });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password" });
  const form = h("form", {
    onsubmit: async (event) => {
      event.preventDefault();
      error.textContent = "";
      try {
        await login(username.value.trim(), password.value);
        route();
      } catch (failure) {
        error.textContent = failure.message;
      }
    },
  },
  h("label", {}, "Username", username),
  h("label", {}, "Password", password),
  h("button", { class: "btn", type: "submit" }, "Log in"),
  error);
  replace(main, h("div", { class: "card login" }, h("h1", {}, "Log in to detlite"),
    h("p", { class: "muted" }, "Use a detlite user, as with detlite user login."), form));
  username.focus();
}

window.addEventListener("hashchange", route);
window.addEventListener("detlite:logged-out", route);
document.getElementById("logout").addEventListener("click", async () => {
  await logout().catch(() => {});
  route();
});
window.addEventListener("load", () => {
  if (!window.Plotly) {
    showBanner("Charts are unavailable: Plotly.js did not load from /ui/vendor/plotly.min.js (pip install plotly on the master).");
  }
});
route();
