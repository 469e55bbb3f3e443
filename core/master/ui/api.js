// The master's REST API from the browser: login, the bearer token, typed failures.
const TOKEN_KEY = "detlite.token";
const USER_KEY = "detlite.username";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function session() {
  const token = localStorage.getItem(TOKEN_KEY);
  return token ? { token, username: localStorage.getItem(USER_KEY) || "" } : null;
}

export async function login(username, password) {
  const body = await request("/api/v1/auth/login", { method: "POST", body: { username, password }, anonymous: true });
  localStorage.setItem(TOKEN_KEY, body.token);
  localStorage.setItem(USER_KEY, body.user.username);
  return body.user;
}

export async function logout() {
  try {
    await request("/api/v1/auth/logout", { method: "POST" });
  } finally {
    forget();
  }
}

function forget() {
  localStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(USER_KEY);
}

// GET by default; `params` become the query string (arrays repeat the key).
export async function request(path, { method = "GET", body, params, anonymous = false } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(params || {})) {
    for (const item of Array.isArray(value) ? value : [value]) {
      if (item !== undefined && item !== null && item !== "") url.searchParams.append(key, item);
    }
  }
  const headers = { Accept: "application/json" };
  const current = session();
  if (current && !anonymous) headers.Authorization = `Bearer ${current.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    data = null;
  }
  if (!response.ok) {
    const message = (data && data.error && data.error.message) || `${response.status} ${response.statusText}`;
    if (response.status === 401 && !anonymous) {
      forget();
      window.dispatchEvent(new CustomEvent("detlite:logged-out", { detail: message }));
    }
    throw new ApiError(response.status, message);
  }
  return data;
}

// Points per series a chart asks for: the master downsamples longer series, keeping each
// one's first and last point and its extremes, so a trial of a million points draws at once.
const CHART_POINTS = 1000;

export const api = {
  master: () => request("/api/v1/master"),
  experiments: (params) => request("/api/v1/ui/experiments", { params }),
  experiment: (id) => request(`/api/v1/experiments/${id}`),
  trials: (id) => request(`/api/v1/experiments/${id}/trials`),
  experimentSeries: (id, kind) => request(`/api/v1/ui/experiments/${id}/series`, { params: { kind, maxPoints: CHART_POINTS } }),
  paretoFront: (id) => request(`/api/v1/ui/experiments/${id}/pareto`),
  trial: (id) => request(`/api/v1/trials/${id}`),
  trialSeries: (id, kind) => request(`/api/v1/ui/trials/${id}/series`, { params: { kind, maxPoints: CHART_POINTS } }),
  trialCheckpoints: (id) => request(`/api/v1/trials/${id}/checkpoints`),
  // One page of log lines (at most 10,000 lines and 1 MiB): { offset } reads forward from a
  // line (negative: the tail), { before, limit } the lines before one.
  trialLogs: (id, params) => request(`/api/v1/trials/${id}/logs`, { params }),
  models: () => request("/api/v1/models", { params: { sort_by: "SORT_BY_LAST_UPDATED_TIME", order_by: "ORDER_BY_DESC" } }),
  model: (name) => request(`/api/v1/models/${encodeURIComponent(name)}`),
  createModel: (name, description) => request(`/api/v1/models/${encodeURIComponent(name)}`, { method: "POST", body: { name, description } }),
  versions: (name) => request(`/api/v1/models/${encodeURIComponent(name)}/versions`),
  register: (name, checkpointUuid, comment) =>
    request(`/api/v1/models/${encodeURIComponent(name)}/versions`, { method: "POST", body: { checkpointUuid, comment } }),
};
