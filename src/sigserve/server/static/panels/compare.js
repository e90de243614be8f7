// Compare: one image against many texts, or one text against several images; both through
// POST /v1/rerank, which answers with each document's probability, best first.

import { api, apiKey, attempt, server } from "../api.js";
import { showCode } from "../code.js";
import { picker } from "../picker.js";
import { bars, lines, tiles } from "./results.js";

export function init(panel) {
  const form = panel.querySelector("form");
  const image = picker(form.querySelector(".picker[data-name=image]"));
  const images = picker(form.querySelector(".picker[data-name=images]"));
  for (const radio of panel.querySelectorAll("input[name=mode]")) {
    radio.onchange = () => { form.dataset.mode = radio.value; };
  }

  async function imageAgainstTexts() {
    if (!image.images.length) throw new Error("Pick an image first.");
    const texts = lines(form.texts.value);
    if (!texts.length) throw new Error("Write at least one text.");
    const body = { model: server.model, query: { image: image.images[0].src }, documents: texts };
    const { results } = await api("/v1/rerank", body);
    const rows = results.map((r) => ({ label: texts[r.index], probability: r.relevance_score }));
    return [body, image.images, bars(rows)];
  }

  async function textAgainstImages() {
    const query = form.query.value.trim();
    if (!query) throw new Error("Write a text first.");
    if (!images.images.length) throw new Error("Pick at least one image.");
    const picked = [...images.images];
    const body = { model: server.model, query, documents: picked.map((i) => ({ image: i.src })) };
    const { results } = await api("/v1/rerank", body);
    const items = results.map((r) => ({ src: picked[r.index].src, caption: picked[r.index].name, probability: r.relevance_score }));
    return [body, picked, tiles(items)];
  }

  form.onsubmit = (e) => {
    e.preventDefault();
    attempt(panel, async () => {
      const [body, used, view] = await (form.dataset.mode === "text" ? textAgainstImages() : imageAgainstTexts());
      panel.querySelector(".results").replaceChildren(view);
      showCode(panel, "/v1/rerank", body, used, Boolean(apiKey.get()));
    });
  };
}
