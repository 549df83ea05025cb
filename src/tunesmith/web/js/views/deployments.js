// Deployments: create one with a name, its status (creating until its model is loaded, then
// succeeded, or failed with the reason and a retry), show and regenerate its keys, change its
// limits and content filter, delete it; usage per deployment from /v1/usage.

import { api } from "../api.js";
import { act, copyButton, errorBox, field, h, num, replace, statusBadge, toast, when } from "../dom.js";

const POLL_MS = 1500;

export async function render(main, _params, ctx) {
  const [models, deployments, usage] = await Promise.all([
    api.all("/v1/models"),
    api.all("/v1/deployments"),
    api.get("/v1/usage"),
  ]);
  const usageOf = new Map(usage.deployments.map((u) => [u.deployment, u]));
  const list = h("div", { id: "deployment-list", class: "stack" });
  const redraws = new Map(); // name → redraws that deployment's status, after a poll

  function draw() {
    if (!deployments.length) {
      replace(list, h("p", { class: "empty" }, "No deployments yet. Deploy a model to chat with it."));
      return;
    }
    replace(list, deployments.map(card));
  }

  function card(dep) {
    const errors = h("div", { class: "slot" });
    const keys = h("div", { class: "keys" });
    const u = usageOf.get(dep.name);
    const limits = dep.rate_limits;
    const rpm = h("input", { type: "number", min: 1, value: limits.requests_per_minute, id: `rpm-${dep.name}` });
    const tpm = h("input", { type: "number", min: 1, value: limits.tokens_per_minute, id: `tpm-${dep.name}` });
    const conc = h("input", { type: "number", min: 1, value: limits.max_concurrent_requests, id: `conc-${dep.name}` });
    const filter = h("input", { type: "checkbox", checked: dep.content_filter, id: `filter-${dep.name}` });
    const save = h("button", { type: "submit", class: "small" }, "Save changes");
    const settings = h(
      "form",
      {
        class: "grid",
        onsubmit: (event) => {
          event.preventDefault();
          act(save, errors, async () => {
            const updated = await api.patch(`/v1/deployments/${dep.name}`, {
              rate_limits: {
                requests_per_minute: Number(rpm.value),
                tokens_per_minute: Number(tpm.value),
                max_concurrent_requests: Number(conc.value),
              },
              content_filter: filter.checked,
            });
            Object.assign(dep, updated);
            toast(`Saved ${dep.name}.`);
          });
        },
      },
      field("Requests per minute", rpm),
      field("Tokens per minute", tpm),
      field("Concurrent requests", conc),
      h("div", { class: "field checkbox" }, filter, h("label", { for: filter.id }, "Content filter")),
      h("div", { class: "actions" }, save),
    );
    const showKeys = h("button", { type: "button", class: "small secondary" }, "Show keys");
    showKeys.addEventListener("click", () =>
      act(showKeys, errors, async () => drawKeys(await api.get(`/v1/deployments/${dep.name}/keys`))),
    );
    function drawKeys(k) {
      replace(
        keys,
        ["primary", "secondary"].map((which) => {
          const regen = h("button", { type: "button", class: "small secondary" }, "Regenerate");
          regen.addEventListener("click", () => {
            if (!confirm(`Regenerate the ${which} key of ${dep.name}? The old key stops working at once.`)) return;
            act(regen, errors, async () => {
              drawKeys(await api.post(`/v1/deployments/${dep.name}/keys/regenerate`, { key_name: which }));
              toast(`New ${which} key for ${dep.name}.`);
            });
          });
          const value = k[`${which}_key`];
          return h(
            "div",
            { class: "key-row" },
            h("span", { class: "key-name" }, which),
            h("code", { class: "secret", dataset: { key: which } }, value),
            copyButton(value),
            regen,
          );
        }),
      );
    }
    const remove = h("button", { type: "button", class: "small danger" }, "Delete");
    remove.addEventListener("click", () => {
      if (!confirm(`Delete the deployment ${dep.name}? Its keys stop working.`)) return;
      act(remove, errors, async () => {
        await api.del(`/v1/deployments/${dep.name}`);
        deployments.splice(deployments.indexOf(dep), 1);
        toast(`Deleted ${dep.name}.`);
        draw();
      });
    });
    const owner = ctx.can("owner");
    const badge = h("span", {});
    const problem = h("div", {});
    const retry = h("button", { type: "button", class: "small" }, "Retry");
    retry.addEventListener("click", () =>
      act(retry, errors, async () => {
        // Any update of a failed deployment loads its model again.
        Object.assign(dep, await api.patch(`/v1/deployments/${dep.name}`, {}));
        drawStatus();
        toast(`Loading ${dep.model_id} again.`);
      }),
    );
    function drawStatus() {
      replace(badge, statusBadge(dep.status));
      const failed = dep.status === "failed" && dep.error;
      replace(
        problem,
        failed ? errorBox({ plain: dep.error.message, code: dep.error.code }) : null,
        failed && owner ? h("div", { class: "actions" }, retry) : null,
      );
    }
    redraws.set(dep.name, drawStatus);
    drawStatus();
    return h(
      "article",
      { class: "card deployment", dataset: { deployment: dep.name } },
      h(
        "div",
        { class: "title-row" },
        h("h2", {}, dep.name),
        badge,
        h(
          "div",
          { class: "actions" },
          h("a", { class: "button small", href: `#/playground?deployment=${encodeURIComponent(dep.name)}` }, "Open in playground"),
          owner ? showKeys : null,
          owner ? remove : null,
        ),
      ),
      h(
        "dl",
        { class: "facts compact" },
        [
          ["Model", h("code", {}, dep.model_id)],
          ["Scoring URI", [h("code", {}, dep.scoring_uri), h("p", { class: "hint" }, "POST ", h("code", {}, `${dep.scoring_uri}/v1/chat/completions`), " with this deployment's key (as Authorization or api-key) or a project key.")]],
          ["Created", when(dep.created_at)],
          ["Last used", when(dep.last_used_at)],
          ["Requests", u ? num(u.requests) : "0"],
          ["Tokens (prompt + completion)", u ? `${num(u.prompt_tokens)} + ${num(u.completion_tokens)}` : "0"],
          ["Hosted", u ? `${u.hosting_hours.toFixed(2)} h` : "—"],
        ].map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]),
      ),
      problem,
      keys,
      owner
        ? h("details", {}, h("summary", {}, "Limits and content filter"), settings)
        : h(
            "p",
            { class: "hint" },
            `Limits: ${limits.requests_per_minute} requests and ${limits.tokens_per_minute} tokens per minute, ${limits.max_concurrent_requests} at once; content filter ${dep.content_filter ? "on" : "off"}.`,
          ),
      errors,
    );
  }

  // --- the create form --------------------------------------------------------------------
  const wanted = ctx.query.get("model");
  const deployable = models.filter((m) => m.kind !== "checkpoint" || m.id === wanted);
  const model = h(
    "select",
    { id: "deploy-model", required: true },
    deployable.map((m) =>
      h("option", { value: m.id, selected: wanted ? m.id === wanted : m.kind === "fine-tuned" }, `${m.id} (${m.kind})`),
    ),
  );
  const name = h("input", { id: "deploy-name", required: true, placeholder: "my-model", autocomplete: "off" });
  const filter = h("input", { type: "checkbox", id: "deploy-filter", checked: true });
  const createErrors = h("div", { class: "slot", id: "deploy-errors" });
  const submit = h("button", { type: "submit", id: "deploy-submit" }, "Deploy");
  const form = h(
    "form",
    {
      class: "card",
      id: "deploy-form",
      onsubmit: (event) => {
        event.preventDefault();
        act(submit, createErrors, async () => {
          const dep = await api.post("/v1/deployments", {
            name: name.value.trim(),
            model: model.value,
            content_filter: filter.checked,
          });
          deployments.unshift(dep);
          name.value = "";
          toast(`Deployed ${dep.model_id} as ${dep.name}.`);
          draw();
        });
      },
    },
    h("h2", {}, "New deployment"),
    h(
      "div",
      { class: "grid" },
      field("Model", model),
      field("Deployment name", name, "Chat requests name it as their model."),
      h("div", { class: "field checkbox" }, filter, h("label", { for: "deploy-filter" }, "Content filter")),
    ),
    createErrors,
    h("div", { class: "actions" }, submit),
  );
  replace(
    main,
    h("h1", {}, "Deployments"),
    h(
      "p",
      { class: "lead" },
      "Each deployment serves a model behind the OpenAI-compatible chat endpoint, with its own keys, limits and content filter.",
    ),
    ctx.can("owner") ? form : null,
    list,
  );
  draw();
  if (wanted) name.focus();
  // Follow the deployments whose model is loading until they succeed or fail.
  const timer = setInterval(async () => {
    for (const dep of deployments.filter((d) => d.status === "creating")) {
      try {
        Object.assign(dep, await api.get(`/v1/deployments/${dep.name}`));
      } catch {
        continue; // gone, or the server is away: the next tick tries again
      }
      const redraw = redraws.get(dep.name);
      if (redraw) redraw();
    }
  }, POLL_MS);
  return () => clearInterval(timer);
}

