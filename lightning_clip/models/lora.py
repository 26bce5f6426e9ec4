"""LoRA adapters for a tower's backbone, through the peft library, and merging them back."""

from dataclasses import dataclass, field

from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn


@dataclass
class LoraSettings:
    """Low-rank adapters (Hu et al., 2022) on the backbone layers named in `target_modules`.

    Args:
        target_modules: Names (or name endings) of the linear layers to adapt, e.g.
            ``[qkv]`` for timm ViTs or ``[query, value]`` for BERT-like text models.
        rank: Rank of each adapter.
        alpha: Scale numerator: updates are multiplied by alpha / rank.
        dropout: Dropout on the adapter's input.
    """

    target_modules: list[str] = field(default_factory=list)
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0


def add_lora(model: nn.Module, settings: LoraSettings, key: str) -> nn.Module:
    """Inject adapters into `model` in place; only adapter weights stay trainable."""
    if not settings.target_modules:
        raise ValueError(f"{key}.lora.target_modules: name at least one layer to adapt")
    if settings.rank < 1:
        raise ValueError(f"{key}.lora.rank={settings.rank} is not allowed: it must be >= 1")

    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
    )
    try:
        model = inject_adapter_in_model(config, model)
    except ValueError as error:
        raise ValueError(f"{key}.lora.target_modules: {error}") from None

    for name, parameter in model.named_parameters():
        parameter.requires_grad_("lora_" in name)
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base layer and remove it; returns the plain model."""
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, BaseTunerLayer):
                child.merge()
                setattr(parent, child_name, child.get_base_layer())
    return model
