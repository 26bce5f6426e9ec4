"""Shared fixtures: tiny seeded towers with a 67-token character vocabulary."""

import string
from pathlib import Path

import pytest
import torch
from transformers import BertTokenizerFast

from lightning_clip.models import CLIPModel, ImageTower, TextTower

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

TINY_BERT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 16,
}
TINY_VIT = {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32}
EMBED_DIM = 16
CONTEXT_LENGTH = 8


def shared_data(name: str) -> Path:
    """Path of a real dataset under ../shared/data; skips the test, naming it, if absent."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real dataset not found at {path}")
    return path


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> str:
    """A character-level WordPiece tokenizer: specials, a-z, ##a-##z and 0-9."""
    letters = string.ascii_lowercase
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += list(letters) + [f"##{c}" for c in letters] + list(string.digits)
    directory = tmp_path_factory.mktemp("tokenizer")
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(directory / "vocab.txt")).save_pretrained(directory)
    return str(directory)


@pytest.fixture
def make_image_tower():
    def make(**overrides) -> ImageTower:
        torch.manual_seed(0)
        kwargs = {"model_name": "vit_tiny_patch16_224", "model_kwargs": TINY_VIT}
        return ImageTower(EMBED_DIM, **{**kwargs, **overrides})

    return make


@pytest.fixture
def make_text_tower(tokenizer_dir):
    def make(**overrides) -> TextTower:
        torch.manual_seed(0)
        kwargs = {
            "model_type": "bert",
            "config": TINY_BERT,
            "tokenizer_dir": tokenizer_dir,
            "context_length": CONTEXT_LENGTH,
        }
        return TextTower(EMBED_DIM, **{**kwargs, **overrides})

    return make


@pytest.fixture
def tiny_clip(make_image_tower, make_text_tower) -> CLIPModel:
    return CLIPModel(make_image_tower(), make_text_tower())
