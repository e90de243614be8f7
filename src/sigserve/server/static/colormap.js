// The heatmap colour scale: stops from colormap.json (the same file `sigserve heatmap` reads),
// interpolated linearly, as sigserve.cli.heatmap.colorize does.

const { stops } = await (await fetch(new URL("colormap.json", import.meta.url))).json();

// t in [0, 1] -> [r, g, b]
export function colour(t) {
  const x = Math.min(Math.max(t, 0), 1) * (stops.length - 1);
  const i = Math.min(Math.floor(x), stops.length - 2);
  const f = x - i;
  return stops[i].map((a, k) => Math.round(a * (1 - f) + stops[i + 1][k] * f));
}

export function paintLegend(canvas) {
  const ctx = canvas.getContext("2d");
  for (let x = 0; x < canvas.width; x++) {
    ctx.fillStyle = `rgb(${colour(x / (canvas.width - 1)).join(",")})`;
    ctx.fillRect(x, 0, 1, canvas.height);
  }
}
