"""Every tower in conf/model/image and conf/model/text builds and embeds, swapped by YAML only."""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lightning_clip.cli import register_resolvers
from lightning_clip.models import HFImageTower, ImageTower, TextTower

CONF = Path(__file__).resolve().parents[2] / "conf" / "model"
EMBED_DIM = 16

# the same small sizes under each family's own config names, so random towers build fast
TINY_TEXT = {
    "distilbert": {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64},
    "clip_text_model": {
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 64,
    },
}  # fmt: skip
TINY_TEXT_DEFAULT = {
    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
    "intermediate_size": 64,
}  # fmt: skip


def _init_args(path: Path) -> dict:
    register_resolvers()
    config = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    return config["class_path"], dict(config.get("init_args", {}))


@pytest.mark.parametrize("name", sorted(p.name for p in (CONF / "image").glob("*.yaml")))
def test_image_tower_config_builds_and_embeds(name):
    class_path, init_args = _init_args(CONF / "image" / name)
    tower_class = {
        "lightning_clip.models.ImageTower": ImageTower,
        "lightning_clip.models.HFImageTower": HFImageTower,
    }[class_path]

    torch.manual_seed(0)
    tower = tower_class(EMBED_DIM, **{**init_args, "image_size": 64}).eval()
    with torch.no_grad():
        features = tower(torch.randn(2, 3, 64, 64))
    assert features.shape == (2, EMBED_DIM) and torch.isfinite(features).all()
    assert tower.data_config["input_size"] == (3, 64, 64)


@pytest.mark.parametrize("name", sorted(p.name for p in (CONF / "text").glob("*.yaml")))
def test_text_tower_config_builds_and_embeds(name):
    class_path, init_args = _init_args(CONF / "text" / name)
    assert class_path == "lightning_clip.models.TextTower"
    if "model_type" in init_args:
        init_args["config"] = TINY_TEXT.get(init_args["model_type"], TINY_TEXT_DEFAULT)

    torch.manual_seed(0)
    tower = TextTower(EMBED_DIM, **init_args).eval()
    length = tower.context_length
    tokens = tower.tokenizer(
        ["a dog on a beach", "two cups"], padding="max_length", max_length=length
    )["input_ids"]
    with torch.no_grad():
        features = tower(torch.tensor(tokens))
        alone = tower(torch.tensor(tokens[1:]))
    assert features.shape == (2, EMBED_DIM) and torch.isfinite(features).all()
    # a caption's feature does not depend on the other captions of its batch
    torch.testing.assert_close(features[1:], alone, atol=1e-5, rtol=1e-5)
