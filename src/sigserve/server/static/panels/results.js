// What the panels draw their answers with: probability bars, thumbnail tiles, number formatting.

export const lines = (text) => text.split("\n").map((s) => s.trim()).filter(Boolean);

// Probabilities span many orders of magnitude: 0.9731, 0.0042, 3.1e-6.
export function formatProbability(p) {
  return p >= 0.001 ? p.toFixed(4) : p.toExponential(1);
}

// rows: [{label, probability}] in the order to show. The bar's length is the probability itself.
export function bars(rows) {
  const list = document.createElement("ol");
  list.className = "bars";
  for (const { label, probability } of rows) {
    const item = document.createElement("li");
    item.dataset.probability = String(probability);
    const name = Object.assign(document.createElement("span"), { className: "label", textContent: label });
    const track = Object.assign(document.createElement("span"), { className: "track" });
    const bar = Object.assign(document.createElement("span"), { className: "bar" });
    bar.style.width = `${(probability * 100).toFixed(2)}%`;
    track.append(bar);
    const value = Object.assign(document.createElement("span"), { className: "value", textContent: formatProbability(probability) });
    item.append(name, track, value);
    list.append(item);
  }
  return list;
}

// tiles: [{src?, caption, probability?, detail?}] -> a grid; no src: a placeholder with the caption.
export function tiles(items) {
  const grid = document.createElement("ol");
  grid.className = "tiles";
  for (const { src, caption, probability, detail } of items) {
    const tile = document.createElement("li");
    if (probability !== undefined) tile.dataset.probability = String(probability);
    if (src) {
      const img = Object.assign(document.createElement("img"), { src, alt: caption, loading: "lazy" });
      img.referrerPolicy = "no-referrer";
      tile.append(img);
    } else {
      tile.append(Object.assign(document.createElement("div"), { className: "placeholder", textContent: "no picture kept" }));
    }
    const text = document.createElement("p");
    if (probability !== undefined) text.append(Object.assign(document.createElement("strong"), { textContent: formatProbability(probability) }), " ");
    text.append(Object.assign(document.createElement("span"), { textContent: caption }));
    tile.append(text);
    if (detail) tile.append(Object.assign(document.createElement("p"), { className: "muted detail", textContent: detail }));
    grid.append(tile);
  }
  return grid;
}
