// The fine-tune wizard, step by step as the Foundry's: base model → training data → validation
// data → task parameters → review. Choices live in `state` so every step can go back; a new file
// is only checked (POST /v1/files/validate) until "Start", which uploads and creates the job.

import { api } from "../api.js";
import { act, bytes, errorBox, field, h, num, replace, table, when } from "../dom.js";
import { histogram } from "../charts.js";

const MIN_EXAMPLES = 10; // a job's minimum of training examples, as OpenAI's
const MAX_SPLIT_PERCENT = 50;
const STEPS = ["Base model", "Training data", "Validation data", "Task parameters", "Review"];

export async function render(main, _params, ctx) {
  if (!ctx.can("contributor")) {
    replace(
      main,
      h("h1", {}, "Fine-tune a model"),
      errorBox(
        `This key's role is ${ctx.identity.role}: it can look at jobs and models but not upload files or start jobs. Sign in with a contributor's or owner's key to fine-tune.`,
      ),
    );
    return null;
  }
  const [models, files] = await Promise.all([
    api.all("/v1/models"),
    api.all("/v1/files?purpose=fine-tune"),
  ]);
  const usable = files.filter((f) => f.status === "processed");
  const state = {
    step: 0,
    model: ctx.query.get("model") || (models.find((m) => m.kind === "base") || {}).id || null,
    training: { source: "upload", file: null, fileId: null, report: null },
    validation: { source: "none", file: null, fileId: null, report: null, split: 10 },
    params: {
      custom: false,
      n_epochs: "",
      batch_size: "",
      learning_rate_multiplier: "",
      strategy: "lora",
      lora_rank: "",
      lora_alpha: "",
      lora_dropout: "",
      suffix: "",
      seed: "",
    },
  };
  const steps = h("ol", { class: "steps" });
  const body = h("section", { class: "card step-body", "aria-live": "polite" });
  const nav = h("div", { class: "actions wizard-nav" });

  function show() {
    replace(
      steps,
      STEPS.map((name, i) =>
        h(
          "li",
          { class: i < state.step ? "done" : "", "aria-current": i === state.step ? "step" : null },
          h("span", { class: "n" }, String(i + 1)),
          name,
        ),
      ),
    );
    const renderStep = [modelStep, trainingStep, validationStep, paramsStep, reviewStep][state.step];
    replace(body, h("h2", { id: "step-title", tabindex: "-1" }, STEPS[state.step]), renderStep());
    const back = h(
      "button",
      { type: "button", class: "secondary", disabled: state.step === 0, onclick: () => go(-1) },
      "Back",
    );
    const next =
      state.step < STEPS.length - 1
        ? h(
            "button",
            { type: "button", id: "wizard-next", disabled: !ready(), onclick: () => go(1) },
            "Next",
          )
        : null;
    replace(nav, back, next);
  }

  function go(delta) {
    state.step += delta;
    show();
    body.querySelector("#step-title").focus();
  }

  function refreshNav() {
    const next = nav.querySelector("#wizard-next");
    if (next) next.disabled = !ready();
  }

  function ready() {
    switch (state.step) {
      case 0:
        return Boolean(state.model);
      case 1:
        return Boolean(state.training.report && state.training.report.valid);
      case 2: {
        const v = state.validation;
        if (v.source === "none") return true;
        if (v.source === "split") return splitProblem() === null;
        return Boolean(v.report && v.report.valid);
      }
      default:
        return true;
    }
  }

  // --- step 1: base model -----------------------------------------------------------------
  function modelStep() {
    const groups = [
      ["Base models", models.filter((m) => m.kind === "base")],
      ["Continue fine-tuning a fine-tuned model", models.filter((m) => m.kind !== "base")],
    ];
    return h(
      "div",
      {},
      groups
        .filter(([, list]) => list.length)
        .map(([legend, list]) =>
          h(
            "fieldset",
            { class: "choices" },
            h("legend", {}, legend),
            list.map((m) =>
              h(
                "label",
                { class: "choice" },
                h("input", {
                  type: "radio",
                  name: "model",
                  value: m.id,
                  checked: state.model === m.id,
                  onchange: () => {
                    state.model = m.id;
                    refreshNav();
                  },
                }),
                h("code", {}, m.id),
                h(
                  "small",
                  {},
                  [
                    m.kind,
                    m.context_length ? `${m.context_length.toLocaleString()} tokens of context` : null,
                    m.license ? `license: ${m.license}` : null,
                  ]
                    .filter(Boolean)
                    .join(" · "),
                ),
              ),
            ),
          ),
        ),
    );
  }

  // --- steps 2 and 3: data ----------------------------------------------------------------
  function dataPicker(slot, name) {
    const report = h("div", { class: "report", id: `${name}-report` });
    if (slot.report) report.append(reportView(slot.report, slot.file ? slot.file.name : slot.fileId));
    const drop = h(
      "div",
      { class: "drop", id: `${name}-drop` },
      h("p", {}, "Drop a JSONL file here, or "),
      h("label", { class: "button secondary", for: `${name}-file` }, "choose a file"),
      h("input", {
        type: "file",
        id: `${name}-file`,
        accept: ".jsonl,.json,application/jsonl,application/json",
        class: "visually-hidden-input",
        onchange: (event) => {
          if (event.target.files[0]) check(event.target.files[0]);
        },
      }),
    );
    drop.addEventListener("dragover", (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (event) => {
      event.preventDefault();
      drop.classList.remove("over");
      const file = event.dataTransfer && event.dataTransfer.files[0];
      if (file) check(file);
    });

    async function check(file) {
      slot.file = file;
      slot.fileId = null;
      slot.report = null;
      refreshNav();
      replace(report, h("p", { class: "loading" }, `Checking ${file.name} (${bytes(file.size)})…`));
      const form = new FormData();
      form.append("file", file, file.name);
      try {
        slot.report = await api.postForm("/v1/files/validate", form);
        replace(report, reportView(slot.report, file.name));
      } catch (err) {
        replace(report, errorBox(err));
      }
      refreshNav();
    }

    const choose = h(
      "select",
      {
        id: `${name}-existing`,
        onchange: async (event) => {
          const id = event.target.value;
          slot.fileId = id || null;
          slot.file = null;
          slot.report = null;
          refreshNav();
          if (!id) return report.replaceChildren();
          replace(report, h("p", { class: "loading" }, "Loading its report…"));
          try {
            slot.report = await api.get(`/v1/files/${id}/validation`);
            replace(report, reportView(slot.report, id));
          } catch (err) {
            replace(report, errorBox(err));
          }
          refreshNav();
        },
      },
      h("option", { value: "" }, usable.length ? "Choose a file…" : "No valid files uploaded yet"),
      usable.map((f) =>
        h(
          "option",
          { value: f.id, selected: slot.fileId === f.id },
          `${f.filename} · ${bytes(f.bytes)} · ${when(f.created_at)} (${f.id})`,
        ),
      ),
    );
    return {
      upload: h("div", { class: "picker" }, drop),
      choose: h("div", { class: "picker" }, field("Uploaded file", choose)),
      report,
    };
  }

  function sourceChoice(name, options, slot, onChange) {
    return h(
      "fieldset",
      { class: "choices inline" },
      h("legend", { class: "visually-hidden" }, "Source"),
      options.map(([value, text]) =>
        h(
          "label",
          { class: "choice" },
          h("input", {
            type: "radio",
            name,
            value,
            checked: slot.source === value,
            onchange: () => {
              // A new source starts empty: a report never outlives the file it describes.
              Object.assign(slot, { source: value, file: null, fileId: null, report: null });
              onChange();
            },
          }),
          text,
        ),
      ),
    );
  }

  function trainingStep() {
    const slot = state.training;
    const area = h("div");
    const redraw = () => {
      const picker = dataPicker(slot, "training");
      replace(area, slot.source === "upload" ? picker.upload : picker.choose, picker.report);
      refreshNav();
    };
    redraw();
    return h(
      "div",
      {},
      h(
        "p",
        {},
        "Chat examples as JSONL, one ",
        h("code", {}, '{"messages": [...]}'),
        " object per line. The file is checked now and uploaded when the job starts.",
      ),
      sourceChoice(
        "training-source",
        [
          ["upload", "Upload a new file"],
          ["existing", "Choose an uploaded file"],
        ],
        slot,
        redraw,
      ),
      area,
    );
  }

  function validationStep() {
    const slot = state.validation;
    const area = h("div");
    const redraw = () => {
      if (slot.source === "none") {
        replace(area, h("p", { class: "hint" }, "The job reports training loss only."));
      } else if (slot.source === "split") {
        const share = h("input", {
          type: "number",
          id: "validation-split",
          min: 1,
          max: 50,
          step: 1,
          value: slot.split,
          oninput: (event) => {
            slot.split = Number(event.target.value);
            describeSplit();
            refreshNav();
          },
        });
        const note = h("div", { id: "split-note", "aria-live": "polite" });
        const describeSplit = () => {
          const problem = splitProblem();
          const { held, n } = splitCounts();
          replace(
            note,
            problem
              ? errorBox(problem)
              : h("p", { class: "hint" }, `Holds out ${held} of ${n} examples; ${n - held} remain for training.`),
          );
        };
        describeSplit();
        replace(
          area,
          field(
            "Hold out (% of the training examples)",
            share,
            "A seeded random share of the training file becomes the validation set.",
          ),
          note,
        );
      } else {
        const picker = dataPicker(slot, "validation");
        replace(area, slot.source === "upload" ? picker.upload : picker.choose, picker.report);
      }
      refreshNav();
    };
    redraw();
    return h(
      "div",
      {},
      sourceChoice(
        "validation-source",
        [
          ["none", "None"],
          ["upload", "Upload a new file"],
          ["existing", "Choose an uploaded file"],
          ["split", "Split from the training data"],
        ],
        slot,
        redraw,
      ),
      area,
    );
  }

  // As the server splits: ceil(n × share) held out, at least one; at least 10 must remain.
  function splitCounts() {
    const n = state.training.report ? state.training.report.n_examples : 0;
    return { n, held: Math.min(n, Math.max(1, Math.ceil((n * state.validation.split) / 100))) };
  }

  function splitProblem() {
    const share = state.validation.split;
    if (!(share > 0 && share <= MAX_SPLIT_PERCENT)) {
      return `Hold out more than 0% and at most ${MAX_SPLIT_PERCENT}% of the training examples.`;
    }
    const { n, held } = splitCounts();
    if (n - held < MIN_EXAMPLES) {
      return `Holding out ${held} of ${n} examples leaves ${n - held} for training; a job needs at least ${MIN_EXAMPLES}. Hold out less, or upload a validation file.`;
    }
    return null;
  }

  // --- step 4: task parameters --------------------------------------------------------------
  function paramsStep() {
    const p = state.params;
    const input = (key, attrs, hint, label) =>
      field(
        label,
        h("input", {
          id: `param-${key}`,
          value: p[key],
          placeholder: "auto",
          inputmode: "decimal",
          oninput: (event) => {
            p[key] = event.target.value.trim();
          },
          ...attrs,
        }),
        hint,
      );
    const custom = h(
      "div",
      { class: "grid", hidden: !p.custom },
      input("batch_size", {}, "Examples per optimizer step.", "Batch size"),
      input(
        "learning_rate_multiplier",
        {},
        "Scales the base model's learning rate (1e-3 for LoRA on the bundled model).",
        "Learning rate multiplier",
      ),
      input("n_epochs", {}, "Passes over the training data.", "Number of epochs"),
      h(
        "details",
        { class: "advanced", open: p.strategy !== "lora" || p.lora_rank || p.lora_alpha || p.lora_dropout ? true : null },
        h("summary", {}, "Advanced: LoRA"),
        field(
          "Training method",
          h(
            "select",
            {
              id: "param-strategy",
              onchange: (event) => {
                p.strategy = event.target.value;
              },
            },
            h("option", { value: "lora", selected: p.strategy === "lora" }, "LoRA adapter"),
            h("option", { value: "full", selected: p.strategy === "full" }, "Full fine-tuning"),
          ),
        ),
        input("lora_rank", {}, "Rank of the adapter matrices (8 by default).", "LoRA rank"),
        input("lora_alpha", {}, "Scale of the adapter (16 by default).", "LoRA alpha"),
        input("lora_dropout", {}, "Dropout on the adapter's input (0 by default).", "LoRA dropout"),
      ),
    );
    return h(
      "div",
      {},
      h(
        "fieldset",
        { class: "choices inline" },
        h("legend", { class: "visually-hidden" }, "Parameters"),
        [
          [false, "Use defaults (“auto”, chosen from your data)"],
          [true, "Customize"],
        ].map(([value, text]) =>
          h(
            "label",
            { class: "choice" },
            h("input", {
              type: "radio",
              name: "params-mode",
              value: String(value),
              checked: p.custom === value,
              onchange: () => {
                p.custom = value;
                custom.hidden = !value;
              },
            }),
            text,
          ),
        ),
      ),
      custom,
      h(
        "div",
        { class: "grid" },
        field(
          "Model suffix",
          h("input", {
            id: "param-suffix",
            value: p.suffix,
            maxlength: 64,
            oninput: (event) => {
              p.suffix = event.target.value.trim();
            },
          }),
          "Part of the fine-tuned model's name: ft:base:project:suffix:job.",
        ),
        field(
          "Seed",
          h("input", {
            id: "param-seed",
            value: p.seed,
            placeholder: "random",
            inputmode: "numeric",
            oninput: (event) => {
              p.seed = event.target.value.trim();
            },
          }),
        ),
      ),
    );
  }

  // --- step 5: review and start -------------------------------------------------------------
  function hyperparameters() {
    const p = state.params;
    if (!p.custom) return {};
    const out = {};
    for (const key of ["n_epochs", "batch_size", "learning_rate_multiplier", "lora_rank", "lora_alpha", "lora_dropout"]) {
      if (p[key] !== "" && p[key] !== "auto") out[key] = Number.isNaN(Number(p[key])) ? p[key] : Number(p[key]);
    }
    if (p.strategy !== "lora") out.strategy = p.strategy;
    return out;
  }

  function describe(slot) {
    if (slot.source === "none") return "None";
    if (slot.source === "split") return `${slot.split}% of the training data, held out`;
    const name = slot.file ? `${slot.file.name} (uploaded at start)` : slot.fileId;
    return `${name} · ${slot.report ? slot.report.n_examples : "?"} examples`;
  }

  function reviewStep() {
    const hp = hyperparameters();
    const errors = h("div", { class: "slot", id: "start-errors" });
    const start = h("button", { type: "button", id: "start-job" }, "Start fine-tuning");
    const progress = h("p", { class: "hint", "aria-live": "polite" });
    start.addEventListener("click", () =>
      act(start, errors, async () => {
        const training = await ensureFile(state.training, progress);
        const body = {
          model: state.model,
          training_file: training,
          method: { type: "supervised", supervised: { hyperparameters: hp } },
        };
        const v = state.validation;
        if (v.source === "split") body.validation_split = v.split / 100;
        else if (v.source !== "none") body.validation_file = await ensureFile(v, progress);
        if (state.params.suffix) body.suffix = state.params.suffix;
        if (state.params.seed) body.seed = Number(state.params.seed);
        progress.textContent = "Creating the job…";
        const job = await api.post("/v1/fine_tuning/jobs", body);
        ctx.go(`#/jobs/${job.id}`);
      }).finally(() => {
        progress.textContent = "";
      }),
    );
    const stats = state.training.report && state.training.report.statistics;
    const rows = [
      ["Base model", h("code", {}, state.model)],
      ["Training data", describe(state.training)],
      ["Validation data", describe(state.validation)],
      [
        "Parameters",
        Object.keys(hp).length
          ? Object.entries(hp).map(([k, v]) => `${k} = ${v}`).join(", ")
          : "auto (chosen from the data when the job starts)",
      ],
      ["Suffix", state.params.suffix || "—"],
      ["Seed", state.params.seed || "random"],
      ["Estimated trained tokens", stats ? num(hp.n_epochs ? stats.billable_tokens * hp.n_epochs : stats.estimated_trained_tokens) : "—"],
    ];
    return h(
      "div",
      {},
      h("dl", { class: "facts" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
      errors,
      progress,
      h("div", { class: "actions" }, start),
    );
  }

  async function ensureFile(slot, progress) {
    if (slot.fileId) return slot.fileId;
    progress.textContent = `Uploading ${slot.file.name}…`;
    const form = new FormData();
    form.append("purpose", "fine-tune");
    form.append("file", slot.file, slot.file.name);
    const uploaded = await api.postForm("/v1/files", form);
    slot.fileId = uploaded.id; // a retry after a failed job creation reuses the upload
    return uploaded.id;
  }

  replace(
    main,
    h("h1", {}, "Fine-tune a model"),
    h("nav", { "aria-label": "Wizard steps" }, steps),
    body,
    nav,
  );
  show();
  return null;
}

// The validation report: verdict, errors by line, warnings, and the token distributions.
export function reportView(report, name) {
  const stats = report.statistics || {};
  const verdict = report.valid
    ? h("p", { class: "ok", role: "status" }, `✓ ${name}: ${report.n_examples} valid examples.`)
    : h(
        "div",
        { class: "error", role: "alert" },
        `${name} has ${report.error_count} error${report.error_count === 1 ? "" : "s"}; fix ${report.error_count === 1 ? "it" : "them"} and choose the file again.`,
      );
  const issues = (list, kind) =>
    table(
      ["Line", "Field", "Problem"],
      list.map((i) =>
        h(
          "tr",
          { class: `issue ${kind}` },
          h("td", {}, i.line ?? "—"),
          h("td", {}, i.field ? h("code", {}, i.field) : "—"),
          h("td", {}, i.message),
        ),
      ),
    );
  const hist = stats.histograms || {};
  return h(
    "div",
    { class: "report-body" },
    verdict,
    report.errors.length ? [h("h3", {}, "Errors"), issues(report.errors, "error")] : null,
    report.error_count > report.errors.length
      ? h("p", { class: "hint" }, `… and ${report.error_count - report.errors.length} more.`)
      : null,
    report.warnings.length
      ? h("details", {}, h("summary", {}, `${report.warning_count} warnings`), issues(report.warnings, "warning"))
      : null,
    report.statistics
      ? [
          h(
            "dl",
            { class: "facts compact" },
            [
              ["Examples", report.n_examples],
              ["Tokens per example (median)", num(stats.tokens_per_example && stats.tokens_per_example.median, 0)],
              ["Over the context length", stats.examples_over_context_length],
              ["Billable tokens (one epoch)", num(stats.billable_tokens)],
              ["Epochs if auto", stats.auto_n_epochs],
            ].map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]),
          ),
          h(
            "div",
            { class: "charts" },
            histogram({ title: "Tokens per example", xLabel: "tokens", data: hist.tokens_per_example }),
            histogram({
              title: "Assistant tokens per example",
              xLabel: "tokens",
              data: hist.assistant_tokens_per_example,
            }),
          ),
        ]
      : null,
  );
}
