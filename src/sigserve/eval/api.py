"""One call per task: build the cache, run the sweep, write JSON / Markdown / plot.

    from sigserve.eval import LibrarySource, evaluate_zeroshot, load_classification, load_templates
    result = evaluate_zeroshot(LibrarySource(model, "my-model"), load_classification("val/"),
                               load_templates(), [256], output="out.json")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sigserve.paths import cache_dir

from .cache import EmbeddingCache
from .datasets import ClassificationData, RetrievalData
from .report import markdown_summary, plot_sweep, write_json
from .runner import Embedder, Stats, run_retrieval, run_zeroshot
from .sources import EmbeddingSource


@dataclass
class EvalResult:
    records: list[dict]
    stats: Stats
    summary: str
    files: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # unreadable image -> why


@dataclass
class Outputs:
    """Where to write. `plot=None` draws one only for a sweep (next to the JSON, .png)."""

    output: Path | None = None
    summary: Path | None = None
    plot: Path | None = None
    cache_dir: Path | None = None
    use_cache: bool = True
    batch_size: int = 32
    progress: bool = True
    strict: bool = False  # an unreadable image stops the run (default: skipped, counted and named)

    def wants_plot(self, lengths: list[int | None]) -> bool:
        return self.plot is not None or (len(lengths) > 1 and self.output is not None)


def _cache(source: EmbeddingSource, out: Outputs) -> EmbeddingCache:
    root = (out.cache_dir or cache_dir("eval")) if out.use_cache else None
    return EmbeddingCache(root, source.fingerprint())


def _finish(records: list[dict], embedder: Embedder, out: Outputs, extra: list[str]) -> EvalResult:
    files: dict[str, Path] = {}
    if embedder.skipped:
        shown = [f"`{p}` ({why})" for p, why in list(embedder.skipped.items())[:10]]
        more = len(embedder.skipped) - len(shown)
        extra = [*extra, f"skipped {len(embedder.skipped)} unreadable image(s), left out of the metrics: "
                         + "; ".join(shown) + (f"; and {more} more" if more > 0 else "")]
    summary = markdown_summary(records, embedder.stats, extra)
    if out.output is not None:
        files["json"] = Path(out.output)
        write_json(records, out.output)
    summary_path = out.summary or (Path(out.output).with_suffix(".md") if out.output else None)
    if summary_path is not None:
        Path(summary_path).write_text(summary, encoding="utf-8")
        files["summary"] = Path(summary_path)
    sweep = len({r["max_num_patches"] for r in records}) > 1
    plot_path = out.plot or (Path(out.output).with_suffix(".png") if sweep and out.output else None)
    if plot_path is not None:
        plot_sweep(records, plot_path)
        files["plot"] = Path(plot_path)
    return EvalResult(records, embedder.stats, summary, files, dict(embedder.skipped))


def evaluate_zeroshot(source: EmbeddingSource, data: ClassificationData, templates: list[str], lengths: list[int | None],
                      out: Outputs | None = None, dataset: str | None = None) -> EvalResult:
    out = out or Outputs()
    cache = _cache(source, out)
    try:
        embedder = Embedder(source, cache, out.batch_size, out.progress, out.strict)
        records = run_zeroshot(embedder, data, templates, lengths, dataset)
    finally:
        cache.close()
    extra = [f"data: `{data.source}`", f"templates: {len(templates)}, e.g. `{templates[0]}`"]
    return _finish(records, embedder, out, extra)


def evaluate_retrieval(source: EmbeddingSource, data: RetrievalData, lengths: list[int | None],
                       out: Outputs | None = None, dataset: str | None = None) -> EvalResult:
    out = out or Outputs()
    cache = _cache(source, out)
    try:
        embedder = Embedder(source, cache, out.batch_size, out.progress, out.strict)
        records = run_retrieval(embedder, data, lengths, dataset)
    finally:
        cache.close()
    extra = [f"languages: {', '.join(data.languages())}"]
    return _finish(records, embedder, out, extra)
