// Jobs: the list with status, and a job's page with live loss and accuracy charts, progress and
// ETA, events, checkpoints, resolved hyperparameters, the results file, cancel/pause/resume.

import { api } from "../api.js";
import { act, duration, errorBox, h, num, replace, statusBadge, table, toast, when } from "../dom.js";
import { lineChart } from "../charts.js";

const FINAL = new Set(["succeeded", "failed", "cancelled"]);
const POLL_MS = 1500;

export async function renderList(main) {
  const list = h("div", { id: "job-list" });
  const refresh = h("button", { type: "button", class: "secondary", id: "refresh-jobs" }, "Refresh");
  const slot = h("div", { class: "slot" });
  async function load() {
    const jobs = await api.get("/v1/fine_tuning/jobs?limit=100");
    replace(
      list,
      table(
        ["Job", "Status", "Model", "Fine-tuned model", "Created"],
        jobs.data.map((job) =>
          h(
            "tr",
            { dataset: { job: job.id } },
            h("td", {}, h("a", { href: `#/jobs/${job.id}` }, job.id)),
            h("td", {}, statusBadge(job.status), progressText(job)),
            h("td", {}, h("code", {}, job.model)),
            h("td", {}, job.fine_tuned_model ? h("code", {}, job.fine_tuned_model) : "—"),
            h("td", {}, when(job.created_at)),
          ),
        ),
        { empty: "No fine-tuning jobs yet. Start one with Fine-tune." },
      ),
      jobs.has_more
        ? h("p", { class: "hint" }, "The newest 100 jobs; the CLI (tunesmith jobs list) pages through all.")
        : null,
    );
    return jobs.data;
  }
  refresh.addEventListener("click", () => act(refresh, slot, load));
  replace(
    main,
    h("div", { class: "title-row" }, h("h1", {}, "Fine-tuning jobs"),
      h("div", { class: "actions" }, refresh, h("a", { class: "button", href: "#/fine-tune" }, "New fine-tune"))),
    slot,
    list,
  );
  let jobs = await load();
  // Keep the list current while any job is moving.
  const timer = setInterval(async () => {
    if (jobs.some((j) => !FINAL.has(j.status))) {
      try {
        jobs = await load();
      } catch {
        // the next tick tries again; Refresh shows the error
      }
    }
  }, POLL_MS * 2);
  return () => clearInterval(timer);
}

function progressText(job) {
  if (!job.total_steps || FINAL.has(job.status)) return null;
  return h("small", { class: "progress-text" }, ` ${job.step}/${job.total_steps}`);
}

export async function renderJob(main, [jobId], ctx) {
  let job = await api.get(`/v1/fine_tuning/jobs/${jobId}`);
  const events = new Map(); // id → event; the newest page is merged in on each poll
  const metrics = new Map(); // step → data (a resumed step replaces its earlier report)
  const header = h("div", { class: "title-row" });
  const controls = h("div", { class: "actions" });
  const controlErrors = h("div", { class: "slot", id: "job-errors" });
  const progress = h("section", { class: "card", id: "job-progress" });
  const charts = h("div", { class: "charts", id: "job-charts" });
  const hyper = h("section", { class: "card", id: "job-hyperparameters" });
  const checkpoints = h("section", { class: "card", id: "job-checkpoints" });
  const eventList = h("section", { class: "card", id: "job-events" });

  // Merges the events not seen yet (newest first: pages until one already seen); returns how
  // many of them were messages, which is when checkpoints may have changed.
  async function pollEvents() {
    let after = null;
    let messages = 0;
    for (;;) {
      const page = await api.get(
        `/v1/fine_tuning/jobs/${jobId}/events?limit=100${after ? `&after=${after}` : ""}`,
      );
      let seen = false;
      for (const event of page.data) {
        if (events.has(event.id)) {
          seen = true;
          break;
        }
        events.set(event.id, event);
        if (event.type === "metrics" && event.data && event.data.step !== undefined) {
          metrics.set(event.data.step, event.data);
        } else {
          messages += 1;
        }
      }
      if (seen || !page.has_more || !page.data.length) return messages;
      after = page.data[page.data.length - 1].id;
    }
  }

  function latest() {
    let best = null;
    for (const [step, data] of metrics) if (!best || step > best.step) best = { step, ...data };
    return best;
  }

  function drawHeader() {
    replace(header, h("h1", {}, "Job ", h("code", {}, job.id)), statusBadge(job.status));
    const button = (label, action, cls = "secondary") => {
      const b = h("button", { type: "button", class: cls, id: `job-${action}` }, label);
      b.addEventListener("click", () =>
        act(b, controlErrors, async () => {
          job = await api.post(`/v1/fine_tuning/jobs/${jobId}/${action}`, {});
          toast(`Job ${job.status.replaceAll("_", " ")}.`);
          draw();
        }),
      );
      return b;
    };
    const mayChange = ctx.can("contributor");
    replace(
      controls,
      mayChange && job.status === "running" ? button("Pause", "pause") : null,
      mayChange && job.status === "paused" ? button("Resume", "resume") : null,
      mayChange && !FINAL.has(job.status) ? button("Cancel", "cancel", "danger") : null,
      job.result_files.length ? downloadButton(job.result_files[0]) : null,
      job.fine_tuned_model && ctx.can("owner")
        ? h("a", { class: "button", href: `#/deployments?model=${encodeURIComponent(job.fine_tuned_model)}` }, "Deploy")
        : null,
    );
  }

  function drawProgress() {
    const last = latest();
    const total = job.total_steps || (last && last.total_steps) || null;
    const step = FINAL.has(job.status) && job.status === "succeeded" ? total : job.step || (last && last.step) || 0;
    const share = total ? Math.min(1, step / total) : 0;
    const eta = last && !FINAL.has(job.status) ? last.eta_seconds : null;
    replace(
      progress,
      h("h2", {}, "Progress"),
      h("progress", { max: 1, value: share, "aria-label": "Training progress" }),
      h(
        "dl",
        { class: "facts compact" },
        [
          ["Step", total ? `${step} of ${total}` : step || "—"],
          ["ETA", eta !== null && eta !== undefined ? duration(eta) : job.estimated_finish && !FINAL.has(job.status) ? when(job.estimated_finish) : "—"],
          ["Train loss", num(last && last.train_loss)],
          ["Validation loss", num(last && (last.full_valid_loss ?? last.valid_loss))],
          ["Token accuracy", num(last && last.train_mean_token_accuracy, 3)],
          ["Tokens/s", last && last.tokens_per_second ? Math.round(last.tokens_per_second).toLocaleString() : "—"],
          // the job's own count once it has finished (OpenAI's field is null before), else so far
          ["Trained tokens", num(job.trained_tokens ?? (last && last.trained_tokens))],
          ["Fine-tuned model", job.fine_tuned_model ? h("code", {}, job.fine_tuned_model) : "—"],
          ["Created", when(job.created_at)],
          ["Finished", when(job.finished_at)],
        ].map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]),
      ),
      job.error && job.error.message
        ? errorBox({ plain: job.error.message, code: job.error.code })
        : null,
    );
  }

  function drawCharts() {
    const rows = [...metrics.values()].sort((a, b) => a.step - b.step);
    const series = (pairs) =>
      pairs.map(([key, name]) => ({
        key,
        name,
        points: rows.filter((r) => typeof r[key] === "number").map((r) => [r.step, r[key]]),
      }));
    replace(
      charts,
      lineChart({
        title: "Loss",
        xLabel: "step",
        yLabel: "loss",
        series: series([
          ["train_loss", "train"],
          ["valid_loss", "validation"],
          ["full_valid_loss", "full validation"],
        ]),
      }),
      lineChart({
        title: "Token accuracy",
        xLabel: "step",
        yLabel: "accuracy",
        series: series([
          ["train_mean_token_accuracy", "train"],
          ["valid_mean_token_accuracy", "validation"],
          ["full_valid_mean_token_accuracy", "full validation"],
        ]),
      }),
    );
  }

  function drawHyper() {
    const resolved = (job.method && job.method.supervised && job.method.supervised.hyperparameters) || {};
    const entries = Object.entries(resolved).length ? Object.entries(resolved) : Object.entries(job.hyperparameters);
    replace(
      hyper,
      h("h2", {}, "Hyperparameters"),
      h(
        "dl",
        { class: "facts compact" },
        entries.map(([k, v]) => [h("dt", {}, k), h("dd", {}, Array.isArray(v) ? v.join(", ") : String(v))]),
      ),
      h("p", { class: "hint" }, `Training file ${job.training_file}`,
        job.validation_file ? `, validation file ${job.validation_file}` : "",
        job.validation_split ? `, ${Math.round(job.validation_split * 100)}% held out for validation` : "", "."),
    );
  }

  async function drawCheckpoints() {
    const page = await api.get(`/v1/fine_tuning/jobs/${jobId}/checkpoints?limit=100`);
    replace(
      checkpoints,
      h("h2", {}, "Checkpoints"),
      table(
        ["Step", "Model", "Train loss", "Validation loss"],
        page.data.map((c) =>
          h(
            "tr",
            {},
            h("td", {}, c.step_number),
            h("td", {}, h("code", {}, c.fine_tuned_model_checkpoint)),
            h("td", {}, num(c.metrics && c.metrics.train_loss)),
            h("td", {}, num(c.metrics && (c.metrics.full_valid_loss ?? c.metrics.valid_loss))),
          ),
        ),
        { empty: "No checkpoints yet." },
      ),
    );
  }

  function drawEvents() {
    const messages = [...events.values()]
      .filter((e) => e.type !== "metrics")
      .sort((a, b) => b.created_at - a.created_at || (a.id < b.id ? 1 : -1));
    replace(
      eventList,
      h("h2", {}, "Events"),
      h(
        "ol",
        { class: "events", reversed: true },
        messages.slice(0, 200).map((e) =>
          h("li", { class: `event level-${e.level}` }, h("time", {}, when(e.created_at)), " ", e.message),
        ),
      ),
    );
  }

  function draw() {
    drawHeader();
    drawProgress();
    drawCharts();
    drawHyper();
    drawEvents();
  }

  replace(
    main,
    header,
    h("p", {}, h("a", { href: "#/jobs" }, "← All jobs")),
    h("div", { class: "toolbar" }, controls),
    controlErrors,
    progress,
    h("section", { class: "card" }, h("h2", {}, "Metrics"), charts),
    h("div", { class: "two" }, hyper, checkpoints),
    eventList,
  );
  await pollEvents();
  draw();
  await drawCheckpoints();

  let running = true;
  async function tick() {
    if (!running) return;
    try {
      job = await api.get(`/v1/fine_tuning/jobs/${jobId}`);
      const news = await pollEvents();
      draw();
      if (news) await drawCheckpoints();
    } catch (err) {
      replace(controlErrors, errorBox(err));
    }
    if (running && !FINAL.has(job.status)) setTimeout(tick, POLL_MS);
  }
  if (!FINAL.has(job.status)) setTimeout(tick, POLL_MS);
  return () => {
    running = false;
  };
}

function downloadButton(fileId) {
  const b = h("button", { type: "button", class: "secondary", id: "job-results" }, "Download results");
  b.addEventListener("click", () =>
    act(b, null, async () => {
      const blob = await api.blob(`/v1/files/${fileId}/content`);
      const link = h("a", { href: URL.createObjectURL(blob), download: "step_metrics.csv" });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 1000);
    }).catch((err) => toast(err.plain || err.message)),
  );
  return b;
}
