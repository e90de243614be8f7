"""The SigLIP 2 paper's numbers for B/16 NaFlex (arXiv 2502.14786v1, Table 7 / Appendix B): one
checkpoint (google/siglip2-base-patch16-naflex) evaluated at each sequence length.

Values are percentages as printed. ImageNet columns are zero-shot top-1 (our `acc1`); COCO columns
are recall@1 on the Karpathy 5k test split: T->I is our `image_retrieval_recall@1`, I->T our
`text_retrieval_recall@1`. The paper gives no Flickr30k or XM3600 numbers for NaFlex.
"""

from __future__ import annotations

PAPER = "SigLIP 2 (arXiv 2502.14786), Table 7, B/16 NaFlex"
PAPER_MODELS = ("google/siglip2-base-patch16-naflex",)
LENGTHS = (64, 144, 256, 576, 676, 784, 900, 1024)


def _row(*values: float) -> dict[int, float]:
    return dict(zip(LENGTHS, values, strict=True))


# dataset name -> metric key -> max_num_patches -> percent
TABLE7: dict[str, dict[str, dict[int, float]]] = {
    "imagenet1k": {"acc1": _row(71.2, 76.2, 78.5, 80.0, 80.1, 80.2, 80.3, 80.4)},
    "imagenetv2": {"acc1": _row(63.2, 69.4, 71.9, 73.1, 73.5, 73.5, 73.6, 73.5)},
    "mscoco_captions": {
        "image_retrieval_recall@1": _row(43.6, 49.0, 51.1, 52.5, 52.9, 53.1, 52.9, 52.9),
        "text_retrieval_recall@1": _row(60.4, 65.7, 67.3, 69.1, 68.6, 68.8, 69.2, 68.9),
    },
}

# Size of the evaluation split the paper's figure refers to (to flag a subset in the report).
PAPER_SPLIT_SIZE = {"imagenet1k": 50_000, "imagenetv2": 10_000, "mscoco_captions": 5_000}


def paper_value(dataset: str, metric: str, max_num_patches: int) -> float | None:
    """The paper's percentage for this data set, metric and length, or None."""
    return TABLE7.get(dataset, {}).get(metric, {}).get(max_num_patches)


def paper_metrics(dataset: str) -> list[str]:
    return list(TABLE7.get(dataset, {}))
