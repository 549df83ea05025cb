// Models: the catalog's base models and the project's fine-tuned models and checkpoints,
// filtered by fine-tuning task and kind; details, fine-tune, deploy and delete.

import { api } from "../api.js";
import { act, field, h, replace, showError, table, toast, when } from "../dom.js";

const TASKS = [
  ["", "All tasks"],
  ["chat_completion", "Chat completion"],
  ["text_generation", "Text generation"],
];
const KINDS = [
  ["", "All models"],
  ["base", "Base models"],
  ["fine-tuned", "Fine-tuned"],
  ["checkpoint", "Checkpoints"],
];

const TASK_NAMES = Object.fromEntries(TASKS.filter(([v]) => v));

export async function render(main, _params, ctx) {
  const [models, deployments] = await Promise.all([
    api.all("/v1/models"),
    api.all("/v1/deployments"),
  ]);
  const deployedAs = new Map(deployments.map((d) => [d.model_id, d.name]));
  const task = select("task-filter", TASKS);
  const kind = select("kind-filter", KINDS);
  const list = h("div", { id: "model-list" });
  const detail = h("section", { id: "model-detail", "aria-live": "polite" });

  function draw() {
    const shown = models.filter(
      (m) =>
        (!task.value || (m.tasks || []).includes(task.value)) &&
        (!kind.value || m.kind === kind.value),
    );
    replace(
      list,
      table(
        ["Model", "Kind", "Base", "Context", "Created", ""],
        shown.map((m) => row(m)),
        { empty: "No model matches these filters." },
      ),
    );
  }

  function row(m) {
    const status = h("div", { class: "row-status" });
    const deployed = deployedAs.get(m.id);
    const actions = h(
      "div",
      { class: "row-actions" },
      h("button", { type: "button", class: "small secondary", onclick: () => showDetail(m) }, "Details"),
      ctx.can("contributor")
        ? h("a", { class: "button small secondary", href: `#/fine-tune?model=${encodeURIComponent(m.id)}` }, "Fine-tune")
        : null,
      deployed
        ? h("a", { class: "button small secondary", href: "#/deployments" }, `Deployed as ${deployed}`)
        : ctx.can("owner")
          ? h("button", { type: "button", class: "small", onclick: () => deployForm(m, status) }, "Deploy")
          : null,
      m.kind !== "base" && ctx.can("owner")
        ? h(
            "button",
            {
              type: "button",
              class: "small danger",
              "aria-label": `Delete ${m.id}`,
              onclick: (event) => remove(m, event.currentTarget, status),
            },
            "Delete",
          )
        : null,
    );
    const names = (m.registered_names || []).map((n) => h("span", { class: "tag" }, n));
    return h(
      "tr",
      { dataset: { model: m.id } },
      h("td", {}, h("code", { class: "id" }, m.id), names, status),
      h("td", {}, m.kind),
      h("td", {}, m.base_model ? h("code", {}, m.base_model) : "—"),
      h("td", {}, m.context_length ? m.context_length.toLocaleString() : "—"),
      h("td", {}, when(m.created)),
      h("td", {}, actions),
    );
  }

  async function remove(m, button, slot) {
    if (!confirm(`Delete ${m.id}? Its files are removed.`)) return;
    await act(button, slot, async () => {
      await api.del(`/v1/models/${encodeURIComponent(m.id)}`);
      models.splice(models.indexOf(m), 1);
      toast(`Deleted ${m.id}.`);
      draw();
    });
  }

  function deployForm(m, slot) {
    const suffix = m.id.startsWith("ft:") ? m.id.split(":")[3] || "model" : m.id;
    const name = h("input", {
      value: suffix.toLowerCase().replace(/[^a-z0-9-]+/g, "-").replace(/^-+|-+$/g, "") || "model",
      required: true,
    });
    const errors = h("div", { class: "slot" });
    const submit = h("button", { type: "submit", class: "small" }, "Deploy");
    const form = h(
      "form",
      {
        class: "inline-form",
        onsubmit: async (event) => {
          event.preventDefault();
          await act(submit, errors, async () => {
            const dep = await api.post("/v1/deployments", { name: name.value.trim(), model: m.id });
            deployedAs.set(dep.model_id, dep.name);
            toast(`Deployed ${m.id} as ${dep.name}.`);
            draw();
          });
        },
      },
      field("Deployment name", name),
      submit,
      h("button", { type: "button", class: "small secondary", onclick: () => slot.replaceChildren() }, "Cancel"),
      errors,
    );
    replace(slot, form);
    name.focus();
  }

  async function showDetail(m) {
    replace(detail, h("p", { class: "loading" }, "Loading…"));
    try {
      const full = await api.get(`/v1/models/${encodeURIComponent(m.id)}`);
      replace(detail, details(full));
      detail.scrollIntoView({ block: "nearest" });
    } catch (err) {
      showError(detail, err);
    }
  }

  task.addEventListener("change", draw);
  kind.addEventListener("change", draw);
  replace(
    main,
    h("h1", {}, "Models"),
    h(
      "p",
      { class: "lead" },
      "Base models you can fine-tune, and the fine-tuned models and checkpoints of this project.",
    ),
    h(
      "div",
      { class: "filters", role: "group", "aria-label": "Filters" },
      field("Fine-tuning task", task),
      field("Kind", kind),
    ),
    list,
    detail,
  );
  draw();
  return null;
}

function select(id, options) {
  return h(
    "select",
    { id },
    options.map(([value, text]) => h("option", { value }, text)),
  );
}

function details(m) {
  const rows = [
    ["Kind", m.kind],
    ["Tasks", (m.tasks || []).map((t) => TASK_NAMES[t] || t).join(", ") || "—"],
    ["Context length", m.context_length ? `${m.context_length.toLocaleString()} tokens` : "—"],
    ["License", m.license || "Not recorded in the model's files; check its source before use."],
    ["Base model", m.base_model || "—"],
    ["Fine-tuning job", m.fine_tuning_job ? h("a", { href: `#/jobs/${m.fine_tuning_job}` }, m.fine_tuning_job) : "—"],
    ["Registered names", (m.registered_names || []).join(", ") || "—"],
    ["Created", when(m.created)],
  ];
  return h(
    "div",
    { class: "card" },
    h("h2", {}, "Details of ", h("code", {}, m.id)),
    h("dl", { class: "facts" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    h("h3", {}, "Chat template"),
    m.chat_template
      ? h("pre", { class: "template", tabindex: "0" }, m.chat_template)
      : h("p", { class: "empty" }, "Not available yet (the model is prepared on its first use)."),
  );
}

