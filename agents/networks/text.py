"""Built-in, download-free instruction tokenizer (hashing words into a fixed vocabulary).

Lower-cases, splits into words and single punctuation marks, and maps each piece to
crc32(piece) mod (vocab_size - 2) + 2; id 0 is padding and 1 is reserved (unknown). The ids are
the same in every process and on every machine (no Python `hash`, no vocabulary file).
"""

from __future__ import annotations

import re
import zlib
from typing import Sequence

import numpy as np

PAD_ID = 0
UNKNOWN_ID = 1
_PIECES = re.compile(r"\w+|[^\w\s]")


def split_words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks of `text`."""
    return _PIECES.findall(text.lower())


def word_id(word: str, vocab_size: int) -> int:
    """The stable id of one piece, in [2, vocab_size)."""
    if vocab_size <= 2:
        raise ValueError(f"vocab_size must be > 2, got {vocab_size}")
    return zlib.crc32(word.encode("utf-8")) % (vocab_size - 2) + 2


def tokenize(texts: str | Sequence[str], max_tokens: int, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32 [B, max_tokens], mask bool [B, max_tokens]) of B instructions (one str: B = 1).

    Longer instructions are truncated to their first `max_tokens` pieces; shorter ones are padded
    with id 0 and mask False.
    """
    if isinstance(texts, (str, bytes)):
        texts = [texts]
    ids = np.zeros((len(texts), max_tokens), np.int32)
    for row, text in enumerate(texts):
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        pieces = split_words(str(text))[:max_tokens]
        ids[row, :len(pieces)] = [word_id(p, vocab_size) for p in pieces]
    return ids, ids != PAD_ID
