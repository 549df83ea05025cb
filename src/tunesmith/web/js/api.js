// The portal's only door to tunesmith: the public HTTP API, called with the signed-in key.
// The key lives in sessionStorage, so it is gone when the browser session ends.

const KEY_SLOT = "tunesmith.key";

export class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || null;
    this.param = error.param || null;
    this.type = error.type || null;
  }

  // What went wrong, in words a person can act on.
  get plain() {
    if (this.status === 0) return this.message;
    if (this.status === 401) return "The API key was not accepted. Sign in again with a valid key.";
    if (this.status === 429) return `Too many requests: ${this.message}`;
    return this.message;
  }
}

export function savedKey() {
  return sessionStorage.getItem(KEY_SLOT);
}

export function saveKey(key) {
  if (key) sessionStorage.setItem(KEY_SLOT, key);
  else sessionStorage.removeItem(KEY_SLOT);
}

async function fail(response) {
  let error = { message: `${response.status} ${response.statusText}` };
  try {
    const body = await response.json();
    if (body && body.error) error = body.error;
  } catch {
    // not JSON: keep the status line
  }
  if (response.status === 401) window.dispatchEvent(new CustomEvent("tunesmith:unauthorized"));
  return new ApiError(response.status, error);
}

async function send(method, path, { json, form, key, signal } = {}) {
  const headers = { Authorization: `Bearer ${key ?? savedKey() ?? ""}` };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, signal });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, { message: "The tunesmith server cannot be reached. Is it running?" });
  }
  if (!response.ok) throw await fail(response);
  return response;
}

export const api = {
  async get(path, options) {
    return (await send("GET", path, options)).json();
  },
  async post(path, json, options = {}) {
    return (await send("POST", path, { ...options, json })).json();
  },
  async patch(path, json) {
    return (await send("PATCH", path, { json })).json();
  },
  async del(path) {
    return (await send("DELETE", path)).json();
  },
  async postForm(path, form) {
    return (await send("POST", path, { form })).json();
  },
  async blob(path) {
    return (await send("GET", path)).blob();
  },

  // Every item of a cursor-paged list (OpenAI's `has_more` / `after`).
  async all(path, { limit = 100, max = 10000 } = {}) {
    const items = [];
    let after = null;
    for (;;) {
      const sep = path.includes("?") ? "&" : "?";
      const page = await this.get(`${path}${sep}limit=${limit}${after ? `&after=${after}` : ""}`);
      items.push(...page.data);
      if (!page.has_more || !page.data.length || items.length >= max) return items;
      after = page.data[page.data.length - 1].id;
    }
  },

  // A streamed chat completion: calls onDelta(text) as tokens arrive; resolves to the finish
  // reason and usage. Server-sent events, read straight from the response body.
  async streamChat(body, { onDelta, signal }) {
    const response = await send("POST", "/v1/chat/completions", {
      json: { ...body, stream: true, stream_options: { include_usage: true } },
      signal,
    });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let finish = null;
    let usage = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") return { finish, usage };
          const chunk = JSON.parse(data);
          if (chunk.error) throw new ApiError(500, chunk.error);
          if (chunk.usage) usage = chunk.usage;
          for (const choice of chunk.choices || []) {
            if (choice.delta && choice.delta.content) onDelta(choice.delta.content);
            if (choice.finish_reason) finish = choice.finish_reason;
          }
        }
      }
    }
    return { finish, usage };
  },
};
