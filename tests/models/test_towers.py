import pytest
import torch
from torch.testing import assert_close

from lightning_clip.data.tokenizer import CaptionTokenizer
from lightning_clip.models import ImageTower
from tests.conftest import EMBED_DIM


def test_image_width_is_measured_from_the_backbone(make_image_tower):
    tower = make_image_tower(
        model_name="resnet18", model_kwargs={"channels": (8, 16, 24, 40)}, image_size=32
    )
    assert tower.backbone.width == 40
    assert tower(torch.randn(2, 3, 32, 32)).shape == (2, EMBED_DIM)


def test_vit_grid_follows_image_size_without_repeating_it(make_image_tower):
    kwargs = {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}
    tower = make_image_tower(model_kwargs=kwargs, image_size=48)
    assert tower.data_config["input_size"] == (3, 48, 48)
    assert tower(torch.randn(1, 3, 48, 48)).shape == (1, EMBED_DIM)


def test_image_size_overrides_the_backbone_data_config(make_image_tower):
    tower = make_image_tower(model_name="resnet18", model_kwargs={}, image_size=48)
    assert tower.data_config["input_size"] == (3, 48, 48)
    own_config = tower.backbone.model.pretrained_cfg
    assert tower.data_config["interpolation"] == own_config["interpolation"]
    assert tower.data_config["mean"] == own_config["mean"]


def test_unknown_backbone_name_is_rejected_with_close_matches():
    with pytest.raises(ValueError, match="resnet_18.*resnet18"):
        ImageTower(EMBED_DIM, model_name="resnet_18")


def test_missing_pretrained_file_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="pretrained_file.*no such file"):
        ImageTower(EMBED_DIM, model_name="resnet18", pretrained_file=str(tmp_path / "w.pth"))


def test_frozen_image_backbone_keeps_batchnorm_statistics(make_image_tower):
    tower = make_image_tower(
        model_name="resnet18", model_kwargs={}, image_size=32, freeze_backbone=True
    )
    tower.train()
    stats = tower.backbone.model.bn1.running_mean.clone()
    tower(torch.randn(4, 3, 32, 32) * 5 + 3)
    assert_close(tower.backbone.model.bn1.running_mean, stats)
    assert not any(p.requires_grad for p in tower.backbone.parameters())
    assert all(p.requires_grad for p in tower.head.parameters())


def test_projection_none_needs_matching_widths(make_image_tower):
    with pytest.raises(ValueError, match="width \\(32\\).*embed_dim \\(16\\)"):
        make_image_tower(proj="none")


@pytest.mark.parametrize("pool", ["cls", "mean", "eos", "pooler"])
def test_caption_feature_does_not_depend_on_batch_padding(make_text_tower, pool):
    tower = make_text_tower(pool=pool, context_length=16).eval()
    tokenizer = tower.tokenizer
    short = tokenizer(["cat"], padding="max_length", max_length=5, return_tensors="pt")
    padded = tokenizer(["cat"], padding="max_length", max_length=16, return_tensors="pt")

    with torch.no_grad():
        alone = tower(short["input_ids"])
        in_long_batch = tower(padded["input_ids"])
    assert_close(alone, in_long_batch, atol=1e-5, rtol=1e-5)


def test_eos_pooling_reads_the_last_real_token(make_text_tower):
    tower = make_text_tower(pool="eos").eval()
    tokens = tower.tokenizer(["ab", "abcd"], padding="max_length", max_length=8)["input_ids"]
    tokens = torch.tensor(tokens)
    mask = tower.attention_mask(tokens)
    assert mask.sum(dim=1).tolist() == [4, 6]  # CLS, characters, SEP


def test_text_tower_needs_exactly_one_source(tokenizer_dir):
    from lightning_clip.models import TextTower

    with pytest.raises(ValueError, match="exactly one of pretrained_dir"):
        TextTower(EMBED_DIM, tokenizer_dir=tokenizer_dir)


def test_unknown_text_model_type_is_rejected(make_text_tower):
    with pytest.raises(ValueError, match="text_tower.model_type"):
        make_text_tower(model_type="no_such_model")


def test_context_length_beyond_position_embeddings_is_rejected(make_text_tower):
    with pytest.raises(ValueError, match="context_length=32.*max_position_embeddings=16"):
        make_text_tower(context_length=32)


def test_empty_tokenizer_directory_is_named(tmp_path):
    from lightning_clip.models import TextTower

    with pytest.raises(
        ValueError, match=f"text_tower.tokenizer_dir: cannot load a tokenizer from {tmp_path}"
    ):
        TextTower(EMBED_DIM, model_type="bert", tokenizer_dir=str(tmp_path))


def test_zero_image_size_is_rejected():
    with pytest.raises(ValueError, match="image_tower.image_size=0"):
        ImageTower(EMBED_DIM, model_name="resnet18", image_size=0)


def test_projection_kinds_map_width_to_embed_dim():
    kwargs = {"model_name": "vit_tiny_patch16_224", "model_kwargs": {"depth": 1, "embed_dim": 32,
              "num_heads": 2, "patch_size": 8}, "image_size": 32}  # fmt: skip
    images = torch.randn(2, 3, 32, 32)

    mlp = ImageTower(EMBED_DIM, proj="mlp", **kwargs).eval()
    assert isinstance(mlp.head, torch.nn.Sequential) and mlp(images).shape == (2, EMBED_DIM)

    # widths already equal: no projection at all, the backbone's features pass through
    identity = ImageTower(32, proj="none", **kwargs).eval()
    with torch.no_grad():
        assert_close(identity(images), identity.backbone(images))


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
@pytest.mark.parametrize("pool", ["cls", "mean", "eos", "pooler"])
def test_every_text_tower_parameter_gets_a_gradient(make_text_tower, model_type, pool):
    # DDP without find_unused_parameters stops on any parameter the loss does not reach
    tower = make_text_tower(model_type=model_type, pool=pool)
    tokens = CaptionTokenizer(tower.tokenizer, tower.context_length)(["a red square", "two"])
    tower(tokens).sum().backward()
    without = [name for name, p in tower.named_parameters() if p.requires_grad and p.grad is None]
    assert without == []
    assert any("pooler" in name for name, _ in tower.named_parameters()) == (pool == "pooler")
