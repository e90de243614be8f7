// NaFlex's target size, exactly as sigserve.images.naflex_size computes it (a test runs both on many
// sizes): one scale for both sides, found by bisection; each side rounded up to whole patches.

export const PATCH = 16;

export function naflexSize(height, width, maxNumPatches, patch = PATCH, eps = 1e-5) {
  const side = (scale, n) => Math.max(patch, patch * Math.ceil((n * scale) / patch));
  let lo = eps / 10;
  let hi = 100.0;
  while (hi - lo >= eps) {
    const mid = (lo + hi) / 2;
    if ((side(mid, height) / patch) * (side(mid, width) / patch) <= maxNumPatches) lo = mid;
    else hi = mid;
  }
  return [side(lo, height), side(lo, width)];
}

// {rows, cols, height, width}: the patch grid and the resized image of a height x width picture.
export function naflexGrid(height, width, maxNumPatches) {
  const [h, w] = naflexSize(height, width, maxNumPatches);
  return { rows: h / PATCH, cols: w / PATCH, height: h, width: w };
}
