"""Embed a whole corpus on Ray Data: `sigserve batch` and `sigserve.batch.embed`.

    from sigserve.batch import embed
    summary = embed("photos/", "embeddings/", model="google/siglip2-base-patch16-naflex")
    print(summary)   # rows, errors, images/s, per-worker rate and memory

Ray is an optional extra (`pip install "sigserve[batch]"`); importing this package does not need it,
calling `embed` does. See docs/batch.md.
"""

from sigserve.batch.run import INSTALL_HINT, Summary, embed, require_ray

__all__ = ["embed", "Summary", "INSTALL_HINT", "require_ray"]
