"""Pooling of token states and projection from a backbone's width into the shared space."""

from typing import Literal

import torch
from torch import Tensor, nn

TextPool = Literal["cls", "mean", "eos", "pooler"]
ProjectionKind = Literal["linear", "mlp", "none"]


def pool_tokens(
    token_states: Tensor,
    attention_mask: Tensor,
    pool: TextPool,
    pooler_output: Tensor | None = None,
) -> Tensor:
    """(B, L, D) token states and (B, L) mask -> (B, D) one vector per caption.

    Every option reads only unmasked positions, so a caption's vector does not depend on how
    much padding its batch has. `eos` takes the last unmasked token (right padding).
    """
    if pool == "cls":
        return token_states[:, 0]

    if pool == "mean":
        mask = attention_mask.unsqueeze(-1).to(token_states.dtype)  # (B, L, 1)
        return (token_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

    if pool == "eos":
        last = attention_mask.sum(dim=1).long() - 1  # (B,)
        return token_states[torch.arange(token_states.shape[0]), last.clamp(min=0)]

    if pool == "pooler":
        if pooler_output is None:
            raise ValueError(
                "text_tower.pool='pooler': this text model has no pooler output; "
                "use 'cls', 'mean' or 'eos'"
            )
        return pooler_output

    raise ValueError(f"text_tower.pool: {pool!r} is not one of cls, mean, eos, pooler")


def build_projection(
    width: int, embed_dim: int, kind: ProjectionKind, tower: str = "tower"
) -> nn.Module:
    """A map from backbone width D to `embed_dim` E; `tower` names it in error messages."""
    if kind == "linear":
        return nn.Linear(width, embed_dim, bias=False)

    if kind == "mlp":
        hidden = (width + embed_dim) // 2
        return nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, embed_dim, bias=False)
        )

    if kind == "none":
        if width != embed_dim:
            raise ValueError(
                f"{tower}.proj='none' needs the backbone width ({width}) to equal embed_dim "
                f"({embed_dim}); use 'linear' or 'mlp'"
            )
        return nn.Identity()

    raise ValueError(f"{tower}.proj: {kind!r} is not one of linear, mlp, none")
