"""Outputs: clip_benchmark JSON, a Markdown summary, and a metric-vs-length plot."""

from __future__ import annotations

import json
from pathlib import Path

from .paper import PAPER, PAPER_SPLIT_SIZE, paper_value
from .runner import RETRIEVAL_TASK, Stats

ZEROSHOT_COLUMNS = ["acc1", "acc5", "mean_per_class_recall"]
RETRIEVAL_COLUMNS = [f"{d}_retrieval_recall@{k}" for k in (1, 5, 10) for d in ("image", "text")]
PLOTTED = {
    "zeroshot_classification": ["acc1", "acc5"],
    RETRIEVAL_TASK: ["image_retrieval_recall@1", "text_retrieval_recall@1"],
}
SHORT = {"image_retrieval_recall": "T→I R", "text_retrieval_recall": "I→T R"}


def write_json(records: list[dict], path: str | Path) -> None:
    """One record: a clip_benchmark object. Several (a sweep, or several languages): a list of them."""
    payload = records[0] if len(records) == 1 else records
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _label(metric: str) -> str:
    head, _, k = metric.partition("@")
    return f"{SHORT[head]}@{k}" if head in SHORT else metric


def _frac(x: float) -> str:
    return f"{100 * x:.2f}"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}"


def _columns(records: list[dict]) -> list[str]:
    return RETRIEVAL_COLUMNS if records[0]["task"] == RETRIEVAL_TASK else ZEROSHOT_COLUMNS


def _paper(record: dict, metric: str) -> float | None:
    """The paper's number for this record (English only: the paper's COCO / ImageNet are English)."""
    if record["language"] != "en":
        return None
    return paper_value(record["dataset"], metric, record["max_num_patches"])


def markdown_table(records: list[dict]) -> str:
    cols = _columns(records)
    counts = [k for k in ("num_images", "num_texts") if k in records[0].get("sigserve", {})]
    paper_cols = [c for c in cols if any(_paper(r, c) is not None for r in records)]
    head = ["max_num_patches", "language", *counts, *map(_label, cols), *(f"paper {_label(c)}" for c in paper_cols)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        n = [str(r["sigserve"][k]) for k in counts]
        ours = [_frac(r["metrics"][c]) for c in cols]
        paper = [_pct(_paper(r, c)) for c in paper_cols]
        length = "fixed" if r["max_num_patches"] is None else str(r["max_num_patches"])  # a fixed-resolution model
        lines.append("| " + " | ".join([length, r["language"], *n, *ours, *paper]) + " |")
    return "\n".join(lines)


def markdown_summary(records: list[dict], stats: Stats | None = None, extra: list[str] | None = None) -> str:
    r0 = records[0]
    details = r0.get("sigserve", {})
    lines = [
        f"# {r0['task']} on {r0['dataset']}",
        "",
        f"- model: `{r0['model']}` (pretrained: `{r0['pretrained']}`)",
    ]
    shown = {k: v for k, v in details.items() if k not in ("num_images", "num_texts")}
    if shown:
        lines.append("- " + ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in shown.items()))
    if stats is not None:
        lines.append(
            f"- embedded this run: {stats.images_embedded} images, {stats.texts_embedded} texts; "
            f"from cache: {stats.images_cached} images, {stats.texts_cached} texts"
        )
    lines += [f"- {e}" for e in extra or []]
    lines += ["", "Metrics in percent (clip_benchmark JSON holds fractions).", "", markdown_table(records)]
    size = PAPER_SPLIT_SIZE.get(r0["dataset"])
    if size is not None and any(r["language"] == "en" for r in records):
        lines += ["", f"Paper columns: {PAPER}, full split of {size} images."]
        counts = {r.get("sigserve", {}).get("num_images") for r in records if r["language"] == "en"}
        if counts != {size}:
            lines.append(f"This run used {sorted(c for c in counts if c)} images, so it is not the paper's split.")
    return "\n".join(lines) + "\n"


def plot_sweep(records: list[dict], path: str | Path, title: str | None = None) -> None:
    """Metric (percent) vs max_num_patches, ours solid, the paper's dashed where it has the data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    dataset = records[0]["dataset"]
    lengths = sorted({r["max_num_patches"] for r in records})
    languages = sorted({r["language"] for r in records})
    for i, metric in enumerate(PLOTTED[records[0]["task"]]):
        colour = f"C{i}"
        for j, lang in enumerate(languages):
            rows = sorted((r for r in records if r["language"] == lang), key=lambda r: r["max_num_patches"])
            xs = [r["max_num_patches"] for r in rows]
            name = _label(metric) + ("" if languages == ["en"] else f" [{lang}]")
            ax.plot(xs, [100 * r["metrics"][metric] for r in rows], marker="osD^v"[j % 5], color=colour,
                    linestyle=["-", ":", "-."][j % 3], label=f"{name} (ours)")
        paper = [(n, paper_value(dataset, metric, n)) for n in lengths] if "en" in languages else []
        paper = [(n, v) for n, v in paper if v is not None]
        if paper:
            ax.plot(*zip(*paper), linestyle="--", marker="x", color=colour, label=f"{_label(metric)} (paper)")
    ax.set_xscale("log")
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.minorticks_off()
    ax.set_xlabel("max_num_patches (sequence length)")
    ax.set_ylabel("percent")
    ax.set_title(title or f"{records[0]['task']} on {dataset} — {records[0]['model']}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
