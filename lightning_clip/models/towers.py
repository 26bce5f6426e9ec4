"""Image and text towers: a backbone followed by a head that lands in the shared space."""

from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..errors import require
from .backbones import HFImageBackbone, HFTextBackbone, TimmImageBackbone
from .heads import ProjectionKind, TextPool, build_projection, pool_tokens
from .lora import LoraSettings, add_lora, merge_lora


class Tower(nn.Module):
    """What both towers share: locking the backbone, and learning-rate scales per layer."""

    backbone: nn.Module

    def _setup_training(
        self,
        name: str,
        freeze_backbone: bool,
        unlocked_layers: int,
        lr_scale: float,
        layer_decay: float | None,
        lora: LoraSettings | None = None,
    ) -> None:
        require(unlocked_layers >= 0, f"{name}.unlocked_layers", unlocked_layers, "0 or more")
        require(
            unlocked_layers == 0 or freeze_backbone, f"{name}.unlocked_layers", unlocked_layers,
            "0 unless freeze_backbone is true (it unlocks the top of a locked backbone)",
        )  # fmt: skip
        require(lr_scale > 0, f"{name}.lr_scale", lr_scale, "positive")
        require(
            layer_decay is None or 0 < layer_decay <= 1, f"{name}.layer_decay", layer_decay,
            "null or in (0, 1]",
        )  # fmt: skip
        self.freeze_backbone = freeze_backbone
        self.lr_scale = lr_scale
        self.layer_decay = layer_decay
        if lora is not None:
            # the backbone stays as it is; only the adapters learn
            require(
                not freeze_backbone and unlocked_layers == 0, f"{name}.lora", "set",
                "used without freeze_backbone and unlocked_layers (it locks the rest itself)",
            )  # fmt: skip
            self.backbone.model = add_lora(self.backbone.model, lora, name)
            return
        if not freeze_backbone:
            return

        for parameter in self.backbone.parameters():
            parameter.requires_grad_(False)
        parameters = dict(self.backbone.named_parameters())
        groups = self.backbone.layer_groups()
        for group in groups[len(groups) - unlocked_layers :] if unlocked_layers else []:
            for parameter_name in group:
                parameters[parameter_name].requires_grad_(True)

    def train(self, mode: bool = True) -> "Tower":
        super().train(mode)
        if self.freeze_backbone:
            # locked parts keep their BatchNorm statistics and run without dropout
            for module in self.backbone.modules():
                parameters = list(module.parameters())
                if parameters and not any(p.requires_grad for p in parameters):
                    module.eval()
        return self

    def merge_lora(self) -> None:
        """Fold LoRA adapters into the backbone weights, leaving a plain backbone."""
        merge_lora(self.backbone.model)

    def lr_scales(self) -> dict[str, float]:
        """Learning-rate multiplier of every parameter, by name within the tower.

        The tower's `lr_scale`, times `layer_decay` to the power of a backbone layer's
        distance from the top (layer-wise decay; the head counts as the top).
        """
        scales = {name: self.lr_scale for name, _ in self.named_parameters()}
        if self.layer_decay is None:
            return scales
        groups = self.backbone.layer_groups()
        for depth, group in enumerate(reversed(groups), start=1):
            for parameter_name in group:
                scales[f"backbone.{parameter_name}"] = self.lr_scale * self.layer_decay**depth
        return scales


class ImageTower(Tower):
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
        unlocked_layers: int = 0,
        lr_scale: float = 1.0,
        layer_decay: float | None = None,
        lora: LoraSettings | None = None,
        grad_checkpointing: bool = False,
        channels_last: bool = False,
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
            unlocked_layers: With ``freeze_backbone``, keep the last N layer groups of the
                backbone trainable (timm's coarse groups: the stem, then blocks or stages).
            lr_scale: Multiplier of the optimizer's learning rate for this tower.
            layer_decay: Layer-wise learning-rate decay: each backbone layer group below
                the head gets this factor once more (e.g. 0.75); null turns it off.
            lora: LoRA adapters on the named backbone layers; the backbone's own weights
                stay fixed and only the adapters (and the head) learn.
            grad_checkpointing: Recompute the backbone's activations in the backward pass
                instead of storing them: less memory for about a third more compute.
            channels_last: Keep the backbone's weights and its input in channels-last
                layout, which convolutions run faster in on tensor-core GPUs and, for
                depthwise convolutions (EfficientNet, MobileNet), on CPUs as well. Results
                are the same; vision transformers gain nothing from it.
        """
        super().__init__()
        self.backbone = TimmImageBackbone(
            model_name, pretrained_file, image_size, model_kwargs, pretrained_keys
        )
        self.head = build_projection(self.backbone.width, embed_dim, proj, "image_tower")
        self._setup_training(
            "image_tower", freeze_backbone, unlocked_layers, lr_scale, layer_decay, lora
        )
        if grad_checkpointing:
            self.backbone.set_grad_checkpointing(True)
        self.channels_last = channels_last
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)

    @property
    def data_config(self) -> dict[str, Any]:
        """The backbone's preprocessing: input_size, interpolation, mean, std, crop_pct."""
        return dict(self.backbone.data_config)

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, E), not yet normalised."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.head(self.backbone(images))


class HFImageTower(Tower):
    """A Hugging Face vision backbone plus a projection: (B, 3, H, W) -> (B, E).

    An alternative to the timm `ImageTower` for CLIP vision, SigLIP, DINOv2 and other
    AutoModel vision encoders.
    """

    def __init__(
        self,
        embed_dim: int,
        pretrained_dir: str | None = None,
        model_type: str | None = None,
        config: dict[str, Any] | None = None,
        image_size: int | None = None,
        pool: Literal["pooler", "cls", "mean"] = "pooler",
        image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
        image_std: tuple[float, float, float] = (0.5, 0.5, 0.5),
        proj: ProjectionKind = "linear",
        freeze_backbone: bool = False,
        unlocked_layers: int = 0,
        lr_scale: float = 1.0,
        layer_decay: float | None = None,
        lora: LoraSettings | None = None,
        grad_checkpointing: bool = False,
    ):
        """
        Args:
            embed_dim: Size of the shared image-text space; given by the model, not by YAML.
            pretrained_dir: Local Hugging Face directory with weights, config and, ideally,
                the image processor whose size, mean and std the transforms then use.
            model_type: Hugging Face model type (``clip_vision_model``,
                ``siglip_vision_model``, ``dinov2``...) built with random weights.
            config: Hugging Face config values (sizes, patch size...).
            image_size: Input resolution; pretrained position embeddings are interpolated.
            pool: ``pooler`` (the model's own pooling), ``cls`` (first token) or ``mean``.
            image_mean: Normalisation mean when the directory has no image processor.
            image_std: Normalisation std when the directory has no image processor.
            proj: Projection from backbone width to ``embed_dim``: linear, mlp or none.
            freeze_backbone: Keep the backbone's weights and normalisation fixed.
            unlocked_layers: With ``freeze_backbone``, keep the last N transformer layers
                trainable (final norm and pooler go with the last).
            lr_scale: Multiplier of the optimizer's learning rate for this tower.
            layer_decay: Layer-wise learning-rate decay per transformer layer below the
                head; null turns it off.
            lora: LoRA adapters on the named backbone layers; the backbone's own weights
                stay fixed and only the adapters (and the head) learn.
            grad_checkpointing: Recompute the backbone's activations in the backward pass
                instead of storing them: less memory for about a third more compute.
        """
        super().__init__()
        self.backbone = HFImageBackbone(
            pretrained_dir, model_type, config, image_size, pool, image_mean, image_std
        )
        self.head = build_projection(self.backbone.width, embed_dim, proj, "image_tower")
        self._setup_training(
            "image_tower", freeze_backbone, unlocked_layers, lr_scale, layer_decay, lora
        )
        if grad_checkpointing:
            self.backbone.set_grad_checkpointing(True)

    @property
    def data_config(self) -> dict[str, Any]:
        """The backbone's preprocessing: input_size, interpolation, mean, std, crop_pct."""
        return dict(self.backbone.data_config)

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, E), not yet normalised."""
        return self.head(self.backbone(images))


class TextTower(Tower):
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
        unlocked_layers: int = 0,
        lr_scale: float = 1.0,
        layer_decay: float | None = None,
        lora: LoraSettings | None = None,
        grad_checkpointing: bool = False,
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
            unlocked_layers: With ``freeze_backbone``, keep the last N transformer layers
                trainable (final norm and pooler go with the last).
            lr_scale: Multiplier of the optimizer's learning rate for this tower.
            layer_decay: Layer-wise learning-rate decay: each backbone layer below the head
                gets this factor once more (e.g. 0.75); null turns it off.
            lora: LoRA adapters on the named backbone layers; the backbone's own weights
                stay fixed and only the adapters (and the head) learn.
            grad_checkpointing: Recompute the backbone's activations in the backward pass
                instead of storing them: less memory for about a third more compute.
        """
        super().__init__()
        self.backbone = HFTextBackbone(pretrained_dir, model_type, config, tokenizer_dir)
        if pool != "pooler" and getattr(self.backbone.model, "pooler", None) is not None:
            # an unused pooler gets no gradient, which DDP refuses unless told to search for
            # unused parameters every step; BERT-like models run without it
            self.backbone.model.pooler = None
        self.head = build_projection(self.backbone.width, embed_dim, proj, "text_tower")
        self.pool = pool
        self.context_length = context_length
        self._setup_training(
            "text_tower", freeze_backbone, unlocked_layers, lr_scale, layer_decay, lora
        )
        if grad_checkpointing:
            self.backbone.set_grad_checkpointing(True)

        max_positions = getattr(self.backbone.model.config, "max_position_embeddings", None)
        if max_positions is not None and context_length > max_positions:
            raise ValueError(
                f"text_tower.context_length={context_length} exceeds the model's "
                f"max_position_embeddings={max_positions}"
            )

    @property
    def tokenizer(self):
        return self.backbone.tokenizer

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
