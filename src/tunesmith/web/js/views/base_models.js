// Catalog: the base models of this installation (family, size, context, licence, whether the
// engine serves it), registration progress, and for admins the "Add a base model" form, which
// sends what `tunesmith models register` sends and shows the server's message by its field.

import { api } from "../api.js";
import { act, errorBox, field, h, replace, showError, statusBadge, table, toast, when } from "../dom.js";

const TASKS = [
  ["chat_completion", "Chat completion"],
  ["text_generation", "Text generation"],
];
const TASK_NAMES = Object.fromEntries(TASKS);
const STAGES = {
  checking: "Checking",
  copying: "Copying into the data directory",
  hashing: "Computing checksums",
  converting: "Converting the GGUF file",
  done: "Finishing",
};
const POLL_MS = 1000;

export async function render(main, _params, ctx) {
  let models = await api.all("/v1/base_models");
  const list = h("div", { id: "base-model-list" });
  const detail = h("section", { id: "base-model-detail", "aria-live": "polite" });
  let timer = null;
  let stopped = false;

  function draw() {
    replace(
      list,
      table(
        ["Model", "Status", "Family", "Parameters", "Context", "Tasks", "Licence", ""],
        models.map(row),
        { empty: "The catalog is empty." },
      ),
    );
    schedule();
  }

  // While a registration runs in the background, its row follows it.
  function schedule() {
    clearTimeout(timer);
    if (stopped || !models.some((m) => m.status === "registering")) return;
    timer = setTimeout(async () => {
      try {
        models = await api.all("/v1/base_models");
      } catch {
        // a dropped poll is retried on the next tick
      }
      if (!stopped) draw();
    }, POLL_MS);
  }

  function row(m) {
    const slot = h("div", { class: "row-status" });
    const ready = m.status === "ready";
    const actions = h(
      "div",
      { class: "row-actions" },
      h("button", { type: "button", class: "small secondary", onclick: () => showDetail(m) }, "Details"),
      ready && ctx.can("contributor")
        ? h("a", { class: "button small secondary", href: `#/fine-tune?model=${encodeURIComponent(m.id)}` }, "Fine-tune")
        : null,
      m.source_kind !== "bundled" && ctx.can("admin")
        ? h(
            "button",
            {
              type: "button",
              class: "small danger",
              "aria-label": `Remove ${m.id}`,
              onclick: (event) => remove(m, event.currentTarget, slot),
            },
            "Remove",
          )
        : null,
    );
    return h(
      "tr",
      { dataset: { baseModel: m.id } },
      h("td", {}, h("code", { class: "id" }, m.id), slot),
      h("td", {}, statusCell(m)),
      h("td", {}, m.family_label || m.family || "—"),
      h("td", {}, parameters(m.parameters)),
      h("td", {}, m.context_length ? m.context_length.toLocaleString() : "—"),
      h("td", {}, (m.tasks || []).map((t) => TASK_NAMES[t] || t).join(", ")),
      h("td", {}, m.license || "—"),
      h("td", {}, actions),
    );
  }

  async function remove(m, button, slot) {
    if (!confirm(`Remove ${m.id} from the catalog?`)) return;
    await act(button, slot, async () => {
      await api.del(`/v1/base_models/${encodeURIComponent(m.id)}`);
      models = models.filter((other) => other.id !== m.id);
      toast(`Removed ${m.id} from the catalog.`);
      draw();
    });
  }

  async function showDetail(m) {
    replace(detail, h("p", { class: "loading" }, "Loading…"));
    try {
      replace(detail, details(await api.get(`/v1/base_models/${encodeURIComponent(m.id)}`)));
      detail.scrollIntoView({ block: "nearest" });
    } catch (err) {
      showError(detail, err);
    }
  }

  function added(model) {
    models = [...models.filter((m) => m.id !== model.id), model];
    toast(`Registering ${model.id}.`);
    draw();
  }

  replace(
    main,
    h("h1", {}, "Catalog"),
    h(
      "p",
      { class: "lead" },
      "The base models this installation fine-tunes and serves. Registering reads the model's own files: " +
        "its family, size, context length, chat template and licence.",
    ),
    list,
    ctx.can("admin") ? addForm(added) : null,
    detail,
  );
  draw();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

function statusCell(m) {
  if (m.status === "registering") {
    const p = m.progress || {};
    const total = p.total_bytes || 0;
    const bar = h("progress", { max: total || 1, "aria-label": `Registering ${m.id}` });
    if (total) bar.value = p.done_bytes || 0;
    else bar.removeAttribute("value"); // indeterminate until the size is known
    const pct = total ? ` ${Math.floor((100 * (p.done_bytes || 0)) / total)}%` : "";
    return h("div", {}, statusBadge("registering"), bar, h("small", {}, `${STAGES[p.stage] || p.stage || ""}${pct}`));
  }
  if (m.status === "failed") {
    return h("div", {}, statusBadge("failed"), h("small", { class: "error-text" }, m.error ? m.error.message : ""));
  }
  return statusBadge(m.status === "ready" ? "ready" : m.status);
}

function parameters(n) {
  if (!n) return "—";
  for (const [unit, size] of [["B", 1e9], ["M", 1e6], ["K", 1e3]]) {
    if (n >= size) return `${(n / size).toFixed(n >= 10 * size ? 0 : 1)}${unit}`;
  }
  return String(n);
}

function details(m) {
  const rows = [
    ["Status", statusCell(m)],
    ["Source", h("code", {}, m.source)],
    ["Kept", m.copied ? "Copied into the data directory" : "Referenced where it lies (checksums are checked at each job start)"],
    ["Family", m.family_label || m.family || "Not recognised"],
    ["Parameters", m.parameters ? m.parameters.toLocaleString() : "—"],
    ["Context length", m.context_length ? `${m.context_length.toLocaleString()} tokens` : "—"],
    ["Tasks", (m.tasks || []).map((t) => TASK_NAMES[t] || t).join(", ")],
    ["Licence", m.license || "Not recorded in the model's files; check its source before use."],
    ["LoRA targets", (m.lora_target_modules || []).join(", ")],
    ["Suggested for the family", (m.suggested_lora_target_modules || []).join(", ") || "—"],
    ["Learning rates", `LoRA ${m.lora_learning_rate}, full ${m.full_learning_rate}`],
    ["Serving", m.servable ? "Served by the engine" : m.serving_refusal || "Not served"],
    ["Registered", m.created_at ? when(m.created_at) : "Built in"],
  ];
  return h(
    "div",
    { class: "card" },
    h("h2", {}, "Details of ", h("code", {}, m.id)),
    h("dl", { class: "facts" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    h("h3", {}, "Chat template"),
    m.chat_template
      ? h("pre", { class: "template", tabindex: "0" }, m.chat_template)
      : h("p", { class: "empty" }, "This model has no chat template (text generation only)."),
  );
}

// The form an admin registers a model with. Every check is the server's: its message is shown,
// and the field it names is marked and focused.
function addForm(onAdded) {
  const inputs = {
    id: h("input", { name: "id", required: true, placeholder: "Qwen2.5-0.5B-Instruct", autocomplete: "off" }),
    source: h("input", { name: "source", required: true, placeholder: "/models/qwen2.5-0.5b-instruct", autocomplete: "off" }),
    context_length: h("input", { name: "context_length", type: "number", min: "1", step: "1", placeholder: "the model's own" }),
    lora_target_modules: h("input", { name: "lora_target_modules", placeholder: "the family's suggestion", autocomplete: "off" }),
    lora_learning_rate: h("input", { name: "lora_learning_rate", type: "number", step: "any", placeholder: "0.001" }),
    full_learning_rate: h("input", { name: "full_learning_rate", type: "number", step: "any", placeholder: "0.00005" }),
    license: h("input", { name: "license", placeholder: "read from the model's files", autocomplete: "off" }),
  };
  const taskBoxes = TASKS.map(([value, label]) => {
    const box = h("input", { type: "checkbox", name: "tasks", value, checked: true });
    return [value, box, h("label", { class: "choice" }, box, label)];
  });
  const tasksGroup = h(
    "fieldset",
    { class: "choices inline" },
    h("legend", {}, "Tasks"),
    taskBoxes.map(([, , label]) => label),
  );
  const copy = h("input", { type: "checkbox", name: "copy" });
  const errors = h("div", { class: "slot" });
  const submit = h("button", { type: "submit" }, "Add to the catalog");

  function body() {
    const json = {
      id: inputs.id.value.trim(),
      source: inputs.source.value.trim(),
      tasks: taskBoxes.filter(([, box]) => box.checked).map(([value]) => value),
      copy: copy.checked,
    };
    const text = (name) => inputs[name].value.trim();
    if (text("context_length")) json.context_length = Number(text("context_length"));
    if (text("lora_learning_rate")) json.lora_learning_rate = Number(text("lora_learning_rate"));
    if (text("full_learning_rate")) json.full_learning_rate = Number(text("full_learning_rate"));
    if (text("license")) json.license = text("license");
    if (text("lora_target_modules")) {
      json.lora_target_modules = text("lora_target_modules").split(/[\s,]+/).filter(Boolean);
    }
    return json;
  }

  function mark(param) {
    for (const el of [...Object.values(inputs), tasksGroup]) el.removeAttribute("aria-invalid");
    const target = param === "tasks" ? tasksGroup : inputs[param];
    if (!target) return;
    target.setAttribute("aria-invalid", "true");
    (param === "tasks" ? taskBoxes[0][1] : target).focus();
  }

  const form = h(
    "form",
    {
      class: "card",
      id: "add-base-model",
      onsubmit: async (event) => {
        event.preventDefault();
        errors.replaceChildren();
        mark(null);
        submit.disabled = true;
        try {
          const model = await api.post("/v1/base_models", body());
          form.reset();
          onAdded(model);
        } catch (err) {
          errors.append(errorBox(err));
          mark(err.param);
        } finally {
          submit.disabled = false;
        }
      },
    },
    h("h2", {}, "Add a base model"),
    h(
      "p",
      {},
      "A Hugging Face model folder or a .gguf file on the server's machine, or a Hub id. " +
        "Large models are checked, hashed and converted in the background; this table shows the progress.",
    ),
    h(
      "div",
      { class: "grid" },
      field("Model ID", inputs.id, "Letters, digits, '.', '_' and '-'; used as `model` in jobs."),
      field("Source", inputs.source, "An absolute path on the server, or org/name."),
    ),
    tasksGroup,
    h(
      "label",
      { class: "field checkbox" },
      copy,
      "Copy into the data directory (moving or changing the original later cannot break jobs)",
    ),
    h(
      "details",
      { class: "advanced" },
      h("summary", {}, "Advanced: defaults for jobs"),
      h(
        "div",
        { class: "grid" },
        field("Context length", inputs.context_length),
        field("LoRA target modules", inputs.lora_target_modules, "Comma-separated layer names."),
        field("LoRA learning rate", inputs.lora_learning_rate),
        field("Full fine-tuning learning rate", inputs.full_learning_rate),
        field("Licence", inputs.license),
      ),
    ),
    errors,
    h("div", { class: "actions" }, submit),
  );
  return form;
}
