// The playground's front door: tabs, the API key field, the model's name, and which panels exist
// (Search only when this server answers GET /v1/collections).

import { api, apiKey, server } from "./api.js";
import * as classify from "./panels/classify.js";
import * as compare from "./panels/compare.js";
import * as inside from "./panels/inside.js";
import * as search from "./panels/search.js";

const tabs = [...document.querySelectorAll("[role=tab]")];

function select(tab) {
  for (const t of tabs) {
    const on = t === tab;
    t.setAttribute("aria-selected", String(on));
    t.tabIndex = on ? 0 : -1;
    document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
  }
}

// Arrow keys, Home and End move between tabs (the WAI-ARIA tabs pattern); Tab leaves the list.
function onTabKey(e) {
  const shown = tabs.filter((t) => !t.hidden);
  const i = shown.indexOf(e.target);
  const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: shown.length - 1 }[e.key];
  if (next === undefined) return;
  e.preventDefault();
  const tab = shown[(next + shown.length) % shown.length];
  select(tab);
  tab.focus();
}

async function connect() {
  const line = document.getElementById("model");
  try {
    const { data } = await api("/v1/models", undefined, { quiet: true });
    server.model = data[0].id;
    line.textContent = `${server.model}${data[0].dummy ? " (dummy weights: answers are meaningless)" : ""}`;
  } catch (error) {
    line.textContent = error.status === 401 ? "needs an API key" : `cannot reach the model (${error.message})`;
  }
  const collections = await api("/v1/collections", undefined, { quiet: true }).catch(() => null);
  document.getElementById("tab-search").hidden = !collections;
  if (collections) search.showCollections(collections.data);
  else if (document.getElementById("tab-search").getAttribute("aria-selected") === "true") select(tabs[0]);
}

for (const tab of tabs) {
  tab.onclick = () => select(tab);
  tab.onkeydown = onTabKey;
}
const key = document.getElementById("api-key");
key.value = apiKey.get();
key.onchange = () => { apiKey.set(key.value.trim()); connect(); };
document.getElementById("key-form").onsubmit = (e) => { e.preventDefault(); key.onchange(); };

// Ctrl+Enter (Cmd+Enter) submits the form of whichever field has focus.
document.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) e.target.closest("form")?.requestSubmit();
});

classify.init(document.getElementById("classify"));
compare.init(document.getElementById("compare"));
inside.init(document.getElementById("inside"));
search.init(document.getElementById("search"));
await connect();
document.body.dataset.ready = "true";
