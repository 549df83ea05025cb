// Playground: chat with a deployment, streamed token by token, with a system message,
// temperature and max tokens. The conversation is kept until the page is left or cleared.

import { api } from "../api.js";
import { errorBox, field, h, replace } from "../dom.js";

export async function render(main, _params, ctx) {
  const deployments = await api.all("/v1/deployments");
  if (!deployments.length) {
    replace(
      main,
      h("h1", {}, "Playground"),
      h("p", { class: "empty" }, "Nothing is deployed yet. ", h("a", { href: "#/deployments" }, "Deploy a model"), " to chat with it."),
    );
    return null;
  }
  const wanted = ctx.query.get("deployment");
  const history = [];
  let controller = null;

  const deployment = h(
    "select",
    { id: "pg-deployment" },
    deployments.map((d) => h("option", { value: d.name, selected: d.name === wanted }, `${d.name} · ${d.model_id}`)),
  );
  const system = h("textarea", { id: "pg-system", rows: 3, placeholder: "You are a helpful assistant." });
  const temperature = h("input", { id: "pg-temperature", type: "number", min: 0, max: 2, step: 0.1, value: 0.7 });
  const maxTokens = h("input", { id: "pg-max-tokens", type: "number", min: 1, step: 1, value: 256 });
  const transcript = h("div", { class: "transcript", id: "pg-transcript", "aria-live": "polite" });
  const message = h("textarea", {
    id: "pg-message",
    rows: 2,
    required: true,
    placeholder: "Type a message (Enter sends, Shift+Enter adds a line)",
  });
  const send = h("button", { type: "submit", id: "pg-send" }, "Send");
  const stopButton = h("button", { type: "button", class: "secondary", id: "pg-stop", hidden: true }, "Stop");
  const clear = h("button", { type: "button", class: "secondary", id: "pg-clear" }, "Clear");
  const status = h("p", { class: "hint", id: "pg-status" });

  function bubble(role, text) {
    const body = h("div", { class: "text" }, text);
    const el = h("div", { class: `msg ${role}`, dataset: { role } }, h("span", { class: "who" }, role), body);
    transcript.append(el);
    transcript.scrollTop = transcript.scrollHeight;
    return body;
  }

  async function submit(event) {
    event.preventDefault();
    const text = message.value.trim();
    if (!text || controller) return;
    message.value = "";
    history.push({ role: "user", content: text });
    bubble("user", text);
    const out = bubble("assistant", "");
    out.classList.add("streaming");
    controller = new AbortController();
    send.disabled = true;
    stopButton.hidden = false;
    status.textContent = "Generating…";
    const messages = system.value.trim()
      ? [{ role: "system", content: system.value.trim() }, ...history]
      : [...history];
    let answer = "";
    try {
      const { finish, usage } = await api.streamChat(
        {
          model: deployment.value,
          messages,
          temperature: Number(temperature.value),
          max_tokens: Number(maxTokens.value),
        },
        {
          signal: controller.signal,
          onDelta: (delta) => {
            answer += delta;
            out.textContent = answer;
            transcript.scrollTop = transcript.scrollHeight;
          },
        },
      );
      history.push({ role: "assistant", content: answer });
      const notes = [];
      if (finish === "length") notes.push("stopped at max tokens");
      if (finish === "content_filter") notes.push("stopped by the content filter");
      if (usage) notes.push(`${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens`);
      status.textContent = notes.join(" · ");
      out.dataset.finish = finish || "";
    } catch (err) {
      if (err.name === "AbortError") {
        history.push({ role: "assistant", content: answer });
        status.textContent = "Stopped.";
      } else {
        history.pop(); // the user's turn was not answered; let them edit and resend it
        message.value = text;
        out.parentElement.replaceWith(errorBox(err));
        status.textContent = "";
      }
    } finally {
      out.classList.remove("streaming");
      controller = null;
      send.disabled = false;
      stopButton.hidden = true;
      message.focus();
    }
  }

  stopButton.addEventListener("click", () => controller && controller.abort());
  clear.addEventListener("click", () => {
    history.length = 0;
    transcript.replaceChildren();
    status.textContent = "";
    message.focus();
  });
  message.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  const form = h(
    "form",
    { class: "composer", onsubmit: submit },
    field("Message", message),
    h("div", { class: "actions" }, send, stopButton, clear),
  );
  replace(
    main,
    h("h1", {}, "Playground"),
    h(
      "div",
      { class: "playground" },
      h(
        "aside",
        { class: "card settings", "aria-label": "Settings" },
        field("Deployment", deployment),
        field("System message", system),
        field("Temperature", temperature),
        field("Max tokens", maxTokens),
      ),
      h("section", { class: "card chat", "aria-label": "Chat" }, transcript, status, form),
    ),
  );
  message.focus();
  return () => controller && controller.abort();
}
