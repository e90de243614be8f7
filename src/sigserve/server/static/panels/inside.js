// Look inside: the image with its NaFlex patch grid (computed here, as the server computes it) for the
// max_num_patches on the slider; and a text's heatmap from POST /v1/heatmap, one colour per patch.

import { api, apiKey, attempt, server } from "../api.js";
import { showCode } from "../code.js";
import { colour, paintLegend } from "../colormap.js";
import { naflexGrid } from "../naflex.js";
import { picker } from "../picker.js";
import { formatProbability } from "./results.js";

export function init(panel) {
  const stage = panel.querySelector(".stage");
  const [img, canvas] = [stage.querySelector("img"), stage.querySelector("canvas")];
  const slider = panel.querySelector("input[name=max_num_patches]");
  const opacity = panel.querySelector("input[name=opacity]");
  const legend = panel.querySelector(".legend");
  const readout = panel.querySelector(".readout");
  const form = panel.querySelector("form");
  let picked = null; // {name, type, src}
  let heat = null; // {text, rows, cols, probabilities: rows x cols}

  picker(panel.querySelector(".picker"), {
    onChange: ([image]) => {
      picked = image ?? null;
      heat = null;
      stage.hidden = !picked;
      if (picked) img.src = picked.src;
      draw();
    },
  });
  paintLegend(legend.querySelector("canvas"));
  img.onload = draw;
  new ResizeObserver(draw).observe(img);
  slider.oninput = draw;
  slider.onchange = () => heat && attempt(panel, () => showHeatmap(heat.text)); // redraw for the new grid
  opacity.oninput = draw;
  for (const radio of panel.querySelectorAll("input[name=scale]")) radio.onchange = draw;
  form.onsubmit = (e) => {
    e.preventDefault();
    attempt(panel, () => showHeatmap(form.text.value.trim()));
  };
  canvas.onmousemove = (e) => { readout.textContent = describeCell(e); };
  canvas.onmouseleave = () => { readout.textContent = ""; };

  const grid = () => naflexGrid(img.naturalHeight, img.naturalWidth, Number(slider.value));
  const shown = (g) => heat && heat.rows === g.rows && heat.cols === g.cols; // the heatmap fits this grid

  function span() {
    if (panel.querySelector("input[name=scale]:checked").value === "absolute") return [0, 1];
    const all = heat.probabilities.flat();
    return [Math.min(...all), Math.max(...all)];
  }

  async function showHeatmap(text) {
    if (!picked) throw new Error("Pick an image first.");
    if (!text) throw new Error("Write a text first.");
    const body = { model: server.model, image: picked.src, texts: [text], max_num_patches: Number(slider.value) };
    const answer = await api("/v1/heatmap", body);
    heat = { text, rows: answer.rows, cols: answer.cols, probabilities: answer.data[0].probabilities };
    draw();
    showCode(panel, "/v1/heatmap", body, [picked], Boolean(apiKey.get()));
  }

  function draw() {
    panel.querySelector("output[name=patches]").value = slider.value;
    const info = panel.querySelector(".grid-info");
    if (!picked || !img.naturalWidth) {
      info.textContent = "Pick an image to see its patch grid.";
      return;
    }
    const g = grid();
    info.textContent = `${img.naturalWidth}×${img.naturalHeight} px is resized to ${g.width}×${g.height} px: `
      + `${g.cols}×${g.rows} = ${g.rows * g.cols} patches of 16×16 px (at most ${slider.value}).`;
    const [w, h] = [img.clientWidth, img.clientHeight];
    const ratio = devicePixelRatio || 1;
    canvas.width = Math.round(w * ratio);
    canvas.height = Math.round(h * ratio);
    canvas.style.width = `${w}px`;
    canvas.style.height = `${h}px`;
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    const xs = edges(g.cols, w);
    const ys = edges(g.rows, h);
    if (shown(g)) paintCells(ctx, xs, ys);
    paintGrid(ctx, xs, ys, w, h);
    Object.assign(canvas.dataset, { rows: g.rows, cols: g.cols, heatmap: shown(g) ? "shown" : "none" });
    legend.hidden = !shown(g);
    if (shown(g)) {
      const [lo, hi] = span();
      legend.querySelector(".lo").textContent = formatProbability(lo);
      legend.querySelector(".hi").textContent = formatProbability(hi);
    }
  }

  function paintCells(ctx, xs, ys) {
    const [lo, hi] = span();
    ctx.globalAlpha = Number(opacity.value);
    heat.probabilities.forEach((row, r) => row.forEach((p, c) => {
      ctx.fillStyle = `rgb(${colour(hi > lo ? (p - lo) / (hi - lo) : 0).join(",")})`;
      ctx.fillRect(xs[c], ys[r], xs[c + 1] - xs[c], ys[r + 1] - ys[r]);
    }));
    ctx.globalAlpha = 1;
  }

  function describeCell(e) {
    if (!picked) return "";
    const g = grid();
    const c = Math.min(g.cols - 1, Math.floor((e.offsetX / img.clientWidth) * g.cols));
    const r = Math.min(g.rows - 1, Math.floor((e.offsetY / img.clientHeight) * g.rows));
    const p = shown(g) ? `: p(${JSON.stringify(heat.text)}) = ${formatProbability(heat.probabilities[r][c])}` : "";
    return `row ${r}, column ${c}${p}`;
  }
}

// n cells over `size` pixels -> n + 1 whole-pixel edges (cells meet without seams).
const edges = (n, size) => Array.from({ length: n + 1 }, (_, i) => Math.round((i * size) / n));

function paintGrid(ctx, xs, ys, w, h) {
  ctx.strokeStyle = "rgba(255, 255, 255, 0.6)";
  ctx.lineWidth = 1;
  ctx.beginPath();
  for (const x of xs.slice(1, -1)) { ctx.moveTo(x + 0.5, 0); ctx.lineTo(x + 0.5, h); }
  for (const y of ys.slice(1, -1)) { ctx.moveTo(0, y + 0.5); ctx.lineTo(w, y + 0.5); }
  ctx.stroke();
}
