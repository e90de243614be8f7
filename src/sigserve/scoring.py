"""Normalisation and SigLIP's calibrated sigmoid scores, in numpy."""

from __future__ import annotations

import numpy as np


def l2_normalize(x: np.ndarray, eps: float = 0.0) -> np.ndarray:
    """Unit vectors along the last axis (float32); `eps` is added to the norm."""
    x = np.asarray(x, dtype=np.float32)
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + eps)


def sigmoid_probabilities(image_embeds: np.ndarray, text_embeds: np.ndarray, logit_scale: float,
                          logit_bias: float) -> np.ndarray:
    """p(image i matches text j) = sigmoid(exp(t) * cos + b): independent per pair, NOT a softmax,
    so a row does not sum to 1. Inputs must be L2-normalised. -> (n_img, n_txt) float32."""
    logits = (image_embeds @ text_embeds.T).astype(np.float32) * np.float32(np.exp(logit_scale)) + np.float32(logit_bias)
    return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)


def max_cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The largest 1 - cos between corresponding rows of two embedding matrices (how far an
    approximate path, int8 say, moved the embeddings)."""
    return float(np.max(1 - np.sum(l2_normalize(a) * l2_normalize(b), axis=-1)))
