"""SigLIP 2 text rules on top of the Gemma tokenizer.

The `tokenizers` library does the SentencePiece-BPE work from the checkpoint's tokenizer.json; the
rules are ours, applied whatever post-processor or class the file declares:
lowercase (the `Lowercase` normalizer, character by character, as transformers' Siglip2Tokenizer),
no BOS, EOS appended, at most 63 tokens + EOS, right-padded with <pad> (id 0) to exactly 64,
and no attention mask: the model pools the last position, which must be padding for short texts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, normalizers

from sigserve.errors import ModelLoadError, TextInputError


@dataclass
class TokenBatch:
    ids: np.ndarray  # (B, context_length) int64
    lengths: list[int]  # tokens before padding, EOS included (what usage meters count)


class TextTokenizer:
    def __init__(self, tokenizer_file: Path, context_length: int = 64):
        try:
            tok = Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:
            raise ModelLoadError(f"cannot read tokenizer {tokenizer_file}: {exc}") from exc
        lower = normalizers.Lowercase()
        tok.normalizer = normalizers.Sequence([lower, tok.normalizer]) if tok.normalizer else lower
        tok.no_padding()
        tok.no_truncation()
        self._tok = tok
        self.context_length = context_length
        self.eos_id = self._special_id("<eos>")
        self.pad_id = self._special_id("<pad>")
        # Only the first 63 tokens count, and no token spans more than `longest` characters, so a text
        # is cut to this many characters before tokenizing: the same ids, and a 10 MB string costs what
        # a 2 KB one does. (Lowercasing never shortens a text, so the cut stays long enough after it.)
        longest = max(len(piece) for piece in tok.get_vocab() if not piece.startswith("<0x"))
        self.max_chars = (context_length + 1) * longest

    def _special_id(self, token: str) -> int:
        i = self._tok.token_to_id(token)
        if i is None:
            raise ModelLoadError(f"tokenizer has no {token} token; a Gemma (SigLIP 2) tokenizer is required")
        return i

    def __call__(self, texts: list[str]) -> TokenBatch:
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TextInputError(i, f"expected a string, got {type(t).__name__}")
        T = self.context_length
        ids = np.full((len(texts), T), self.pad_id, dtype=np.int64)
        lengths = []
        cut = [t[: self.max_chars] for t in texts]
        for row, enc in enumerate(self._tok.encode_batch(cut, add_special_tokens=False)):
            tokens = enc.ids[: T - 1] + [self.eos_id]  # sticky EOS: truncation keeps room for it
            ids[row, : len(tokens)] = tokens
            lengths.append(len(tokens))
        return TokenBatch(ids, lengths)
