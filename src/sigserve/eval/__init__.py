"""`sigserve eval`: zero-shot classification and retrieval benchmarks on the user's own data,
with clip_benchmark-compatible JSON, a Markdown summary, a sequence-length sweep and a plot
beside the SigLIP 2 paper's numbers. See docs/eval.md."""

from .api import EvalResult, Outputs, evaluate_retrieval, evaluate_zeroshot
from .datasets import DatasetError, load_classification, load_retrieval
from .metrics import retrieval_metrics, zeroshot_metrics
from .sources import LibrarySource, ServerSource
from .templates import canonicalize, load_templates

__all__ = [
    "DatasetError",
    "EvalResult",
    "LibrarySource",
    "Outputs",
    "ServerSource",
    "canonicalize",
    "evaluate_retrieval",
    "evaluate_zeroshot",
    "load_classification",
    "load_retrieval",
    "load_templates",
    "retrieval_metrics",
    "zeroshot_metrics",
]
