// Classify: one image, labels one a line, optional templates -> POST /v1/classify -> a bar per label.

import { api, apiKey, attempt, server } from "../api.js";
import { showCode } from "../code.js";
import { picker } from "../picker.js";
import { bars, lines } from "./results.js";

export function init(panel) {
  const image = picker(panel.querySelector(".picker"));
  const form = panel.querySelector("form");
  form.onsubmit = (e) => {
    e.preventDefault();
    attempt(panel, async () => {
      if (!image.images.length) throw new Error("Pick an image first.");
      const labels = lines(form.labels.value);
      if (!labels.length) throw new Error("Write at least one label.");
      const body = { model: server.model, input: [{ image: image.images[0].src }], labels };
      const templates = lines(form.templates.value);
      if (templates.length) body.templates = templates;
      const { data } = await api("/v1/classify", body);
      const rows = data[0].predictions.map((p) => ({ label: p.label, probability: p.score }));
      panel.querySelector(".results").replaceChildren(bars(rows));
      panel.querySelector(".note").hidden = false;
      showCode(panel, "/v1/classify", body, image.images, Boolean(apiKey.get()));
    });
  };
}
