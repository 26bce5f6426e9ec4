"""Fixtures shared by the data tests."""

import pytest
from transformers import AutoTokenizer

from lightning_clip.data.tokenizer import CaptionTokenizer

CONTEXT_LENGTH = 8


@pytest.fixture
def caption_tokenizer(tokenizer_dir) -> CaptionTokenizer:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    return CaptionTokenizer(tokenizer, CONTEXT_LENGTH)
