"""Shared fixtures: tiny seeded towers with a 77-token character vocabulary."""

import string
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from lightning_clip.data.digits import prepare_digits
from lightning_clip.models import CLIPModel, ImageTower, TextTower
from lightning_clip.module import CLIPLitModule

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


def character_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level WordPiece tokenizer (77 tokens): no download, real BERT behaviour."""
    characters = string.ascii_lowercase + string.digits
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += list(characters) + [f"##{c}" for c in characters]
    ids = {token: index for index, token in enumerate(vocab)}

    backend = Tokenizer(models.WordPiece(ids, unk_token="[UNK]", continuing_subword_prefix="##"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> str:
    """`character_tokenizer` saved in Hugging Face layout."""
    directory = tmp_path_factory.mktemp("tokenizer")
    character_tokenizer().save_pretrained(directory)
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
def tiny_module(make_image_tower, make_text_tower):
    module = CLIPLitModule(
        image_tower=lambda embed_dim: make_image_tower(),
        text_tower=lambda embed_dim: make_text_tower(),
        embed_dim=EMBED_DIM,
    )
    return module.eval()


@pytest.fixture
def tiny_clip(make_image_tower, make_text_tower) -> CLIPModel:
    return CLIPModel(make_image_tower(), make_text_tower())


@pytest.fixture(scope="session")
def digits_root(tmp_path_factory) -> Path:
    return prepare_digits(tmp_path_factory.mktemp("digits"))


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    # the CLI under test gets its arguments explicitly, never pytest's own
    monkeypatch.setattr("sys.argv", ["train.py"])
