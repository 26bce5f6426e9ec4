"""Image and text towers: a backbone followed by a head that lands in the shared space."""

from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_clip.models.backbones import HFTextBackbone, TimmImageBackbone
from lightning_clip.models.heads import ProjectionKind, TextPool, build_projection, pool_tokens


def _freeze(module: nn.Module) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(False)


class ImageTower(nn.Module):
    """A timm image backbone plus a projection: (B, 3, H, W) -> (B, E)."""

    def __init__(
        self,
        embed_dim: int,
        model_name: str,
        pretrained_file: str | None = None,
        image_size: int | None = None,
        model_kwargs: dict[str, Any] | None = None,
        proj: ProjectionKind = "linear",
        freeze_backbone: bool = False,
        pretrained_keys: Literal["name", "position"] = "name",
    ):
        """
        Args:
            embed_dim: Size of the shared image-text space; given by the model, not by YAML.
            model_name: Any timm model name, e.g. ``resnet50`` or ``vit_base_patch16_224``.
            pretrained_file: Local ``.safetensors``/``.pth`` weights; random weights if unset.
                The backbone's pretrained data config (size, interpolation, mean, std) is
                used for the transforms either way.
            image_size: Input resolution; overrides the size in the backbone's data config.
            model_kwargs: Extra keyword arguments for ``timm.create_model``.
            proj: Projection from backbone width to ``embed_dim``: linear, mlp or none.
            freeze_backbone: Keep the backbone's weights and normalisation statistics fixed.
            pretrained_keys: Match file tensors to the model by ``name`` (timm's own files)
                or by ``position`` (weights converted from another library with the same
                layout, e.g. efficientnet_pytorch files for ``tf_efficientnet_lite0``).
        """
        super().__init__()
        self.backbone = TimmImageBackbone(
            model_name, pretrained_file, image_size, model_kwargs, pretrained_keys
        )
        self.head = build_projection(self.backbone.width, embed_dim, proj, "image_tower")
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            _freeze(self.backbone)

    @property
    def data_config(self) -> dict[str, Any]:
        """The backbone's preprocessing: input_size, interpolation, mean, std, crop_pct."""
        return dict(self.backbone.data_config)

    def train(self, mode: bool = True) -> "ImageTower":
        super().train(mode)
        if self.freeze_backbone:
            # a locked tower keeps its BatchNorm statistics and disables dropout
            self.backbone.eval()
        return self

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, E), not yet normalised."""
        return self.head(self.backbone(images))


class TextTower(nn.Module):
    """A Hugging Face text backbone, pooling and a projection: (B, L) tokens -> (B, E)."""

    def __init__(
        self,
        embed_dim: int,
        pretrained_dir: str | None = None,
        model_type: str | None = None,
        config: dict[str, Any] | None = None,
        tokenizer_dir: str | None = None,
        pool: TextPool = "mean",
        context_length: int = 32,
        proj: ProjectionKind = "linear",
        freeze_backbone: bool = False,
    ):
        """
        Args:
            embed_dim: Size of the shared image-text space; given by the model, not by YAML.
            pretrained_dir: Local Hugging Face directory with weights, config and tokenizer.
            model_type: Hugging Face model type (``bert``, ``roberta``...) built with random
                weights from ``config``; use instead of ``pretrained_dir``.
            config: Hugging Face config values (sizes, dropout...) for either way of building.
            tokenizer_dir: Local tokenizer directory; defaults to ``pretrained_dir``.
            pool: How token states become one vector: cls, mean (over real tokens), eos
                (last real token) or pooler (the model's own pooler output).
            context_length: Caption length in tokens, end token included; longer captions
                are truncated.
            proj: Projection from backbone width to ``embed_dim``: linear, mlp or none.
            freeze_backbone: Keep the backbone's weights fixed (LiT-style training).
        """
        super().__init__()
        self.backbone = HFTextBackbone(pretrained_dir, model_type, config, tokenizer_dir)
        self.head = build_projection(self.backbone.width, embed_dim, proj, "text_tower")
        self.pool = pool
        self.context_length = context_length
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            _freeze(self.backbone)

        max_positions = getattr(self.backbone.model.config, "max_position_embeddings", None)
        if max_positions is not None and context_length > max_positions:
            raise ValueError(
                f"text_tower.context_length={context_length} exceeds the model's "
                f"max_position_embeddings={max_positions}"
            )

    @property
    def tokenizer(self):
        return self.backbone.tokenizer

    def train(self, mode: bool = True) -> "TextTower":
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def attention_mask(self, tokens: Tensor) -> Tensor:
        """(B, L) tokens -> (B, L) mask of real tokens, assuming right padding."""
        tokenizer = self.tokenizer
        if tokenizer.pad_token_id != tokenizer.eos_token_id:
            return tokens != tokenizer.pad_token_id

        # NOTE: tokenizers that pad with their end token (CLIP, GPT-2) keep the first one
        first_end = (tokens == tokenizer.eos_token_id).int().argmax(dim=1, keepdim=True)
        positions = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0)
        return positions <= first_end

    def forward(self, tokens: Tensor) -> Tensor:
        """(B, L) tokens -> (B, E), not yet normalised."""
        attention_mask = self.attention_mask(tokens)
        token_states, pooler_output = self.backbone(tokens, attention_mask.long())
        pooled = pool_tokens(token_states, attention_mask, self.pool, pooler_output)
        return self.head(pooled)
