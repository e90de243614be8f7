// Search (shown only when the server has collections): a text and/or an image against a collection,
// POST /v1/collections/{name}/search, hits as tiles. A hit's picture shows when its source is a URL;
// collections keep no image bytes, so other hits show their id.

import { api, apiKey, attempt } from "../api.js";
import { showCode } from "../code.js";
import { picker } from "../picker.js";
import { tiles } from "./results.js";

let select = null;

export function showCollections(collections) {
  const chosen = select.value;
  select.replaceChildren(...collections.map((c) => {
    const option = Object.assign(document.createElement("option"), { value: c.name, textContent: `${c.name} (${c.count})` });
    option.selected = c.name === chosen;
    return option;
  }));
  if (!collections.length) select.append(new Option("no collections yet", ""));
}

export function init(panel) {
  const form = panel.querySelector("form");
  select = form.collection;
  const image = picker(form.querySelector(".picker"));
  form.onsubmit = (e) => {
    e.preventDefault();
    attempt(panel, async () => {
      const name = select.value;
      if (!name) throw new Error("This server has no collections yet: create one with `sigserve index` or the API.");
      const query = {};
      if (form.text.value.trim()) query.text = form.text.value.trim();
      if (image.images.length) query.image = image.images[0].src;
      if (!query.text && !query.image) throw new Error("Type a query or pick an image.");
      const body = { query, top_k: Number(form.top_k.value) || 12, ...parseFilter(form.filter.value) };
      if (form.threshold.value !== "") body.threshold = Number(form.threshold.value);
      const path = `/v1/collections/${encodeURIComponent(name)}/search`;
      const { data } = await api(path, body);
      panel.querySelector(".results").replaceChildren(data.length ? tiles(data.map(tile)) : nothing());
      showCode(panel, path, body, image.images, Boolean(apiKey.get()));
    });
  };
}

function parseFilter(text) {
  if (!text.trim()) return {};
  try {
    return { filter: JSON.parse(text) };
  } catch (error) {
    throw new Error(`The filter is not valid JSON: ${error.message}`);
  }
}

function tile(hit) {
  const picture = /^(https?:|data:image\/)/.test(hit.source ?? "") ? hit.source : undefined;
  const detail = [`cosine ${hit.score.toFixed(4)}`, ...Object.entries(hit.metadata ?? {}).map(([k, v]) => `${k}: ${v}`)];
  return { src: picture, caption: hit.id, probability: hit.probability ?? undefined, detail: detail.join(" · ") };
}

function nothing() {
  return Object.assign(document.createElement("p"), { textContent: "No hits (a threshold or a filter may exclude them all)." });
}
