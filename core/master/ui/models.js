// #/models and #/models/{name}: the model registry -- models, their versions and metadata --
// and the form that registers a checkpoint as a new version.
import { api, ApiError } from "./api.js";
import { fmtTime, h, json, labels, replace, table } from "./util.js";

export async function modelsPage(main) {
  const { models } = await api.models();
  const columns = [
    { key: "name", title: "Name", cell: (m) => h("a", { href: `#/models/${encodeURIComponent(m.name)}` }, m.name) },
    { key: "description", title: "Description", cell: (m) => m.description || h("span", { class: "muted" }, "–") },
    { key: "versions", title: "Versions", num: true, cell: (m) => m.numVersions },
    { key: "labels", title: "Labels", cell: (m) => labels(m.labels) },
    { key: "user", title: "Owner", cell: (m) => m.username || "–" },
    { key: "updated", title: "Last updated", cell: (m) => fmtTime(m.lastUpdatedTime) },
  ];
  replace(main,
    h("h1", {}, "Model registry"),
    h("div", { class: "subtitle" }, "Named models and their versions, each a registered checkpoint."),
    h("div", { class: "card" }, table(columns, models, { testid: "models", empty: "No models yet: register a checkpoint from a trial's page." })));
}

export async function modelPage(main, [name]) {
  const [{ model }, { modelVersions }] = await Promise.all([api.model(name), api.versions(name)]);
  const columns = [
    { key: "version", title: "Version", num: true, cell: (v) => `v${v.version}` },
    { key: "name", title: "Name", cell: (v) => v.name || "–" },
    { key: "checkpoint", title: "Checkpoint", cell: (v) => h("code", {}, v.checkpoint.uuid) },
    { key: "trial", title: "Trial", cell: (v) => h("a", { href: `#/trials/${v.checkpoint.trialId}` }, `Trial ${v.checkpoint.trialId}`) },
    { key: "experiment", title: "Experiment", cell: (v) => h("a", { href: `#/experiments/${v.checkpoint.experimentId}` }, `Experiment ${v.checkpoint.experimentId}`) },
    { key: "batches", title: "Batches", num: true, cell: (v) => v.checkpoint.batchNumber },
    { key: "comment", title: "Comment", cell: (v) => v.comment || "–" },
    { key: "labels", title: "Labels", cell: (v) => labels(v.labels) },
    { key: "metadata", title: "Metadata", cell: (v) => (Object.keys(v.metadata || {}).length ? json(v.metadata) : "–") },
    { key: "created", title: "Registered", cell: (v) => fmtTime(v.creationTime) },
  ];
  const uuid = h("input", { placeholder: "checkpoint uuid", size: 38, "data-testid": "register-uuid" });
  const message = h("span", {});
  replace(main,
    h("div", { class: "crumbs" }, h("a", { href: "#/models" }, "Model registry"), " / ", model.name),
    h("h1", { "data-testid": "model-title" }, model.name),
    h("div", { class: "subtitle" }, model.description || "No description.", model.username ? h("span", {}, `owner ${model.username}`) : null,
      h("span", {}, `updated ${fmtTime(model.lastUpdatedTime)}`), labels(model.labels)),
    h("div", { class: "card" }, h("h2", {}, `Versions (${modelVersions.length})`),
      table(columns, modelVersions.map((v) => ({ ...v, id: v.version })), { testid: "versions", empty: "No versions yet." }),
      h("div", { class: "register" }, uuid,
        h("button", { class: "btn", type: "button", onclick: async () => {
          try {
            await api.register(model.name, uuid.value.trim(), "");
            modelPage(main, [name]);
          } catch (error) {
            replace(message, h("span", { class: "error" }, error.message));
          }
        } }, "Register checkpoint"), message)),
    h("div", { class: "grid2" },
      h("div", { class: "card" }, h("h2", {}, "Metadata"), json(model.metadata || {})),
      h("div", { class: "card" }, h("h2", {}, "Notes"), model.notes ? h("p", {}, model.notes) : h("p", { class: "muted" }, "No notes."))));
}

// The form under a checkpoint: pick a model (or name a new one), add a comment, register.
export function registerForm(uuid) {
  const modelInput = h("input", { list: `models-${uuid}`, placeholder: "model name", "data-testid": "register-model", required: true });
  const options = h("datalist", { id: `models-${uuid}` });
  const comment = h("input", { placeholder: "comment (optional)", "data-testid": "register-comment" });
  const message = h("span", { "data-testid": "register-result" });
  api.models().then(({ models }) => replace(options, models.map((m) => h("option", { value: m.name })))).catch(() => {});
  const submit = h("button", { class: "btn", type: "button", "data-testid": "register-submit", onclick: async () => {
    const name = modelInput.value.trim();
    if (!name) {
      replace(message, h("span", { class: "error" }, "Name the model to register this checkpoint in."));
      return;
    }
    submit.disabled = true;
    try {
      try {
        await api.model(name);
      } catch (error) {
        if (!(error instanceof ApiError && error.status === 404)) throw error;
        await api.createModel(name, "");
      }
      const { modelVersion } = await api.register(name, uuid, comment.value.trim());
      replace(message, h("span", { class: "ok" }, "Registered as ",
        h("a", { href: `#/models/${encodeURIComponent(name)}` }, `${name} v${modelVersion.version}`)));
    } catch (error) {
      replace(message, h("span", { class: "error" }, error.message));
      submit.disabled = false;
    }
  } }, "Register");
  return h("div", { class: "register", "data-testid": "register-form" }, modelInput, options, comment, submit, message);
}
