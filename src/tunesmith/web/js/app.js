// The portal's shell: sign-in, the signed-in identity in the header, and a hash router that
// renders one view into <main>. A view may return a function that stops its timers.

import { api, saveKey, savedKey } from "./api.js";
import { errorBox, h, replace } from "./dom.js";
import * as baseModels from "./views/base_models.js";
import * as catalog from "./views/catalog.js";
import * as deployments from "./views/deployments.js";
import * as jobs from "./views/jobs.js";
import * as playground from "./views/playground.js";
import * as wizard from "./views/wizard.js";

const routes = [
  [/^#\/models$/, catalog.render, "Models"],
  [/^#\/catalog$/, baseModels.render, "Catalog"],
  [/^#\/fine-tune$/, wizard.render, "Fine-tune"],
  [/^#\/jobs$/, jobs.renderList, "Jobs"],
  [/^#\/jobs\/([\w-]+)$/, jobs.renderJob, "Job"],
  [/^#\/deployments$/, deployments.render, "Deployments"],
  [/^#\/playground$/, playground.render, "Playground"],
];

const main = document.getElementById("view");
const RANK = { reader: 0, contributor: 1, owner: 2, admin: 3 };
let identity = null;
let stop = null;
let generation = 0; // a view shows only if no newer route started while it loaded

function signIn(message) {
  identity = null;
  document.getElementById("nav").hidden = true;
  document.getElementById("who").hidden = true;
  const key = h("input", {
    type: "password",
    id: "api-key",
    name: "api-key",
    autocomplete: "current-password",
    required: true,
    placeholder: "tsk-…",
  });
  const slot = h("div", { class: "slot" });
  if (message) slot.append(errorBox(message));
  const button = h("button", { type: "submit" }, "Sign in");
  const form = h(
    "form",
    {
      class: "card signin",
      onsubmit: async (event) => {
        event.preventDefault();
        button.disabled = true;
        slot.replaceChildren();
        try {
          identity = await api.get("/v1/me", { key: key.value.trim() });
          saveKey(key.value.trim());
          showIdentity();
          if (!location.hash || location.hash === "#/sign-in") location.hash = "#/models";
          else route();
        } catch (err) {
          slot.append(errorBox(err));
          key.focus();
        } finally {
          button.disabled = false;
        }
      },
    },
    h("h1", {}, "Sign in to tunesmith"),
    h(
      "p",
      {},
      "Use a project API key (the admin key is printed by ",
      h("code", {}, "tunesmith serve"),
      " on its first start and kept in the data directory). The key stays in this browser tab only.",
    ),
    h("div", { class: "field" }, h("label", { for: "api-key" }, "API key"), key),
    slot,
    h("div", { class: "actions" }, button),
  );
  replace(main, form);
  key.focus();
}

function showIdentity() {
  document.getElementById("nav").hidden = false;
  document.getElementById("who").hidden = false;
  document.getElementById("who-project").textContent = identity.project.name;
  document.getElementById("who-project").title = identity.project.id;
  document.getElementById("who-role").textContent = identity.role;
  // A reader cannot train: the wizard's link goes (the page itself says why, if opened).
  document.querySelector('#nav a[href="#/fine-tune"]').hidden = RANK[identity.role] < RANK.contributor;
}

async function route() {
  if (stop) {
    stop();
    stop = null;
  }
  if (!identity) return;
  const [hash, query] = (location.hash || "#/models").split("?");
  for (const link of document.querySelectorAll("#nav a")) {
    const here = hash === link.getAttribute("href") ||
      (link.getAttribute("href") === "#/jobs" && hash.startsWith("#/jobs/"));
    if (here) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  for (const [pattern, render, title] of routes) {
    const match = hash.match(pattern);
    if (!match) continue;
    document.title = `${title} · tunesmith`;
    const mine = ++generation;
    const view = h("div", { class: "view" });
    replace(main, h("p", { class: "loading" }, "Loading…"));
    const ctx = {
      identity,
      // What the key's role allows, so a page offers only what the API would accept.
      can: (role) => RANK[identity.role] >= RANK[role],
      query: new URLSearchParams(query || ""),
      go: (to) => {
        location.hash = to;
      },
    };
    let halt = null;
    try {
      halt = (await render(view, match.slice(1), ctx)) || null;
    } catch (err) {
      replace(view, h("h1", {}, title), errorBox(err));
    }
    if (mine !== generation) {
      // The user went elsewhere while this view loaded: it never shows.
      if (halt) halt();
      return;
    }
    stop = halt;
    replace(main, view);
    const heading = main.querySelector("h1");
    if (heading) {
      heading.tabIndex = -1;
      heading.focus({ preventScroll: true });
    }
    return;
  }
  location.hash = "#/models";
}

document.getElementById("sign-out").addEventListener("click", () => {
  saveKey(null);
  signIn();
});
window.addEventListener("hashchange", route);
window.addEventListener("tunesmith:unauthorized", () => {
  if (identity) {
    saveKey(null);
    signIn("The API key is no longer accepted; sign in again.");
  }
});

async function start() {
  const key = savedKey();
  if (!key) return signIn();
  try {
    identity = await api.get("/v1/me");
  } catch (err) {
    saveKey(null);
    return signIn(err);
  }
  showIdentity();
  return route();
}

start();
