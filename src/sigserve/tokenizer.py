"""Text rules of the family, on top of each checkpoint's own vocabulary. Which rules apply is read from
tokenizer_config.json's `tokenizer_class` (as transformers reads it), else from the files present.

SigLIP 2 (Gemma vocabulary, tokenizer.json; NaFlex and fixed-resolution checkpoints alike): the
`tokenizers` library does the SentencePiece-BPE work; the rules are ours, applied whatever
post-processor or class the file declares: lowercase (the `Lowercase` normalizer, character by
character, as transformers' Siglip2Tokenizer), no BOS, EOS appended, at most T-1 tokens + EOS,
right-padded with <pad> (id 0) to exactly T.

SigLIP 1 (its own SentencePiece vocabulary, spiece.model): transformers' SiglipTokenizer, step by step:
special tokens (</s>, <unk>) split out first; every other piece canonicalised (Python lowercase, ASCII
punctuation removed, whitespace collapsed and stripped) and encoded by sentencepiece; EOS (</s>)
appended unless the text already ends with it, at most T-1 tokens before it, right-padded with the pad
token (</s> again) to exactly T.

Both: T is the text tower's max_position_embeddings (64; 16 for some SigLIP checkpoints), and there is
no attention mask: the model pools the last position, which must be padding for short texts.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from sigserve.errors import ModelLoadError, TextInputError

GEMMA_CLASSES = {"GemmaTokenizer", "GemmaTokenizerFast", "Siglip2Tokenizer"}
SIGLIP_CLASSES = {"SiglipTokenizer", "SiglipTokenizerFast"}
TOKENIZER_FILES = ("tokenizer.json", "spiece.model")  # Gemma, SigLIP 1


@dataclass
class TokenBatch:
    ids: np.ndarray  # (B, context_length) int64
    lengths: list[int]  # tokens before padding, EOS included (what usage meters count)


class TextTokenizer(Protocol):
    context_length: int
    eos_id: int
    pad_id: int
    rules: str  # "siglip2" or "siglip": which text rules, for describe()

    def __call__(self, texts: list[str]) -> TokenBatch: ...


def load_tokenizer(folder: Path, context_length: int) -> TextTokenizer:
    """The checkpoint's tokenizer with its family's rules (see the module docstring)."""
    folder = Path(folder)
    declared = _declared_class(folder)
    if declared in SIGLIP_CLASSES or (declared is None and not (folder / "tokenizer.json").is_file()
                                      and (folder / "spiece.model").is_file()):
        return SentencePieceTokenizer(folder / "spiece.model", context_length, _siglip_options(folder))
    if declared is not None and declared not in GEMMA_CLASSES:
        raise ModelLoadError(f"tokenizer_config.json declares {declared!r}; sigserve reads the SigLIP 2 (Gemma) and "
                             f"SigLIP (SentencePiece) tokenizers ({', '.join(sorted(GEMMA_CLASSES | SIGLIP_CLASSES))})")
    return GemmaTokenizer(folder / "tokenizer.json", context_length)


def _declared_class(folder: Path) -> str | None:
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return None
    try:
        name = json.loads(path.read_text()).get("tokenizer_class")
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    return name or None


@dataclass(frozen=True)
class SiglipOptions:
    """SigLIP 1's tokenizer_config.json over SiglipTokenizer's defaults."""

    eos: str = "</s>"
    pad: str = "</s>"
    unk: str = "<unk>"
    lowercase: bool = True  # do_lower_case
    # special token -> (lstrip, rstrip): whether it eats the whitespace beside it (added_tokens_decoder;
    # SiglipTokenizer's own default is True for both, what transformers 5 saves is False)
    strips: dict[str, tuple[bool, bool]] = field(default_factory=dict)


def _siglip_options(folder: Path) -> SiglipOptions:
    path = folder / "tokenizer_config.json"
    raw = json.loads(path.read_text()) if path.is_file() else {}
    names = {}
    for key in ("eos", "pad", "unk"):
        value = raw.get(f"{key}_token")
        value = value.get("content") if isinstance(value, dict) else value
        if isinstance(value, str):
            names[key] = value
    strips = {t["content"]: (bool(t.get("lstrip")), bool(t.get("rstrip")))
              for t in (raw.get("added_tokens_decoder") or {}).values() if isinstance(t, dict) and "content" in t}
    return SiglipOptions(**names, lowercase=bool(raw.get("do_lower_case", True)), strips=strips)


def _check_strings(texts: list[str]) -> None:
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TextInputError(i, f"expected a string, got {type(t).__name__}")


def _batch(rows: list[list[int]], context_length: int, eos_id: int, pad_id: int, eos_if_present: bool) -> TokenBatch:
    """Sticky EOS (truncation keeps room for it) and right padding to exactly context_length."""
    ids = np.full((len(rows), context_length), pad_id, dtype=np.int64)
    lengths = []
    for row, tokens in enumerate(rows):
        tokens = tokens[: context_length - 1]
        if not (eos_if_present and tokens and tokens[-1] == eos_id):
            tokens = tokens + [eos_id]
        ids[row, : len(tokens)] = tokens
        lengths.append(len(tokens))
    return TokenBatch(ids, lengths)


# ---------------------------------------------------------------------------------------------
# SigLIP 2: the Gemma vocabulary


class GemmaTokenizer:
    rules = "siglip2"

    def __init__(self, tokenizer_file: Path, context_length: int = 64):
        from tokenizers import Tokenizer, normalizers

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
        # Only the first T-1 tokens count, and no token spans more than `longest` characters, so a text
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
        _check_strings(texts)
        cut = [t[: self.max_chars] for t in texts]
        rows = [enc.ids for enc in self._tok.encode_batch(cut, add_special_tokens=False)]
        return _batch(rows, self.context_length, self.eos_id, self.pad_id, eos_if_present=False)


# ---------------------------------------------------------------------------------------------
# SigLIP 1: its own SentencePiece vocabulary


SPIECE_UNDERLINE = "▁"
PUNCTUATION = str.maketrans("", "", string.punctuation)
WORDS_KEPT = 4  # words kept per token of context: each word is at least one token (margin for odd ones)


class SentencePieceTokenizer:
    rules = "siglip"

    def __init__(self, model_file: Path, context_length: int, options: SiglipOptions | None = None):
        try:
            import sentencepiece as spm
        except ImportError as exc:  # a dependency of sigserve; only missing in a broken install
            raise ModelLoadError("SigLIP (1) checkpoints need the sentencepiece package: pip install sentencepiece") from exc
        if not Path(model_file).is_file():
            raise ModelLoadError(f"{Path(model_file).parent} has no tokenizer.json (SigLIP 2) or spiece.model (SigLIP)")
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.Load(str(model_file))
        except (OSError, RuntimeError) as exc:
            raise ModelLoadError(f"cannot read tokenizer {model_file}: {exc}") from exc
        options = options or SiglipOptions()
        self.context_length = context_length
        self.lowercase = options.lowercase
        self.unk = options.unk
        self.specials = {options.eos, options.pad, options.unk}
        self.strips = {t: options.strips.get(t, (True, True)) for t in self.specials}
        self.eos_id, self.pad_id = self._id(options.eos), self._id(options.pad)
        self._unk_length = len(self._sp.encode(self.unk, out_type=str))
        # Special tokens are split out before anything else (transformers' trie: leftmost, longest first).
        self._split = re.compile("(" + "|".join(re.escape(t) for t in sorted(self.specials, key=len, reverse=True)) + ")")

    def _id(self, token: str) -> int:
        i = self._sp.piece_to_id(token)
        if i == self._sp.unk_id() and token != self.unk:
            raise ModelLoadError(f"spiece.model has no {token} token")
        return i

    def __call__(self, texts: list[str]) -> TokenBatch:
        _check_strings(texts)
        rows = [[self._sp.piece_to_id(p) for p in self.pieces(t)] for t in texts]
        return _batch(rows, self.context_length, self.eos_id, self.pad_id, eos_if_present=True)

    def pieces(self, text: str) -> list[str]:
        """SiglipTokenizer.tokenize: a leading underline, special tokens split out (they strip the
        whitespace beside them), every other chunk canonicalised and encoded."""
        parts = self._split.split(SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " "))
        for i, part in enumerate(parts):
            if part in self.specials:
                lstrip, rstrip = self.strips[part]
                if lstrip and i > 0:
                    parts[i - 1] = parts[i - 1].rstrip()
                if rstrip and i + 1 < len(parts):
                    parts[i + 1] = parts[i + 1].lstrip()
        pieces: list[str] = []
        for part in parts:
            if part in self.specials:
                pieces.append(part)
            elif part:
                pieces.extend(self._encode(part))
        if len(pieces) > 1 and pieces[0] == SPIECE_UNDERLINE and pieces[1] in self.specials:
            pieces = pieces[1:]
        return pieces

    def _encode(self, chunk: str) -> list[str]:
        """Canonicalise (as big_vision's SigLIP evaluators do), then encode behind the unk token and drop
        its pieces: transformers' way to keep sentencepiece's dummy prefix from changing the first word.
        Only the first words can be among the first T-1 tokens (every word is at least one), so the rest
        is cut first: a 10 MB text costs what a short one does, with the same ids."""
        text = chunk.lower() if self.lowercase else chunk
        text = re.sub(r"\s+", " ", text.translate(PUNCTUATION)).strip()
        text = " ".join(text.split(" ", WORDS_KEPT * self.context_length)[: WORDS_KEPT * self.context_length])
        tokens = self._sp.encode(self.unk + text, out_type=str)
        return tokens[self._unk_length:] if len(tokens) >= self._unk_length else tokens
