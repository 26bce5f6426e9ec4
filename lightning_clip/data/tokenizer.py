"""Caption cleaning and tokenisation to a fixed `context_length` that keeps the end token."""

import html
import re

import ftfy
import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from lightning_clip.errors import InputError

# ASCII control characters that ftfy removes (vertical tab and separators too, which
# str.split would take for whitespace)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def clean_caption(text: str) -> str:
    """Repair mojibake and HTML entities, then collapse runs of whitespace."""
    # most captions are plain ASCII, which needs none of ftfy's repairs unless it holds
    # control characters or HTML entities (ftfy unescapes those once more than we do)
    if not text.isascii() or "&" in text or _CONTROL.search(text):
        text = ftfy.fix_text(text)
    # captions scraped from the web are often escaped twice (&amp;amp;)
    text = html.unescape(html.unescape(text))
    return " ".join(text.split())


class CaptionTokenizer:
    """Cleans captions and turns them into (B, L) token ids, right-padded to `context_length`.

    Truncation keeps the tokenizer's end token (SEP or EOS) in the last position, because
    `eos` pooling and most text models rely on it.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, context_length: int):
        if context_length < 2:
            raise InputError(f"context_length must be at least 2, got {context_length}")
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.end_token_id = tokenizer.sep_token_id
        if self.end_token_id is None:
            self.end_token_id = tokenizer.eos_token_id
        self.pad_token_id = tokenizer.pad_token_id
        if self.pad_token_id is None:
            self.pad_token_id = self.end_token_id
        if self.end_token_id is None:
            raise InputError(
                f"tokenizer {type(tokenizer).__name__} has neither a SEP nor an EOS token; "
                "captions need an end token"
            )

    def token_ids(self, text: str) -> tuple[list[int], bool]:
        """One caption -> (ids of at most `context_length`, whether it was truncated)."""
        return self._fit(self.tokenizer(clean_caption(text))["input_ids"])

    def _fit(self, ids: list[int]) -> tuple[list[int], bool]:
        if not ids or ids[-1] != self.end_token_id:
            ids = ids + [self.end_token_id]

        truncated = len(ids) > self.context_length
        if truncated:
            ids = ids[: self.context_length - 1] + [self.end_token_id]
        return ids, truncated

    def __call__(self, texts: list[str]) -> Tensor:
        """B captions -> (B, L) token ids."""
        return self.with_truncation_count(texts)[0]

    def with_truncation_count(self, texts: list[str]) -> tuple[Tensor, int]:
        """B captions -> (B, L) token ids and how many captions were cut to fit."""
        if not texts:
            return torch.full((0, self.context_length), self.pad_token_id), 0
        # one call for the batch: fast tokenizers work through it in native code
        encoded = self.tokenizer([clean_caption(text) for text in texts])["input_ids"]
        rows, truncated = [], 0
        for ids in encoded:
            ids, cut = self._fit(ids)
            rows.append(ids + [self.pad_token_id] * (self.context_length - len(ids)))
            truncated += cut
        return torch.tensor(rows), truncated
