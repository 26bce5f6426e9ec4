"""Gradient caching: a contrastive batch larger than memory allows, split into micro-batches.

The loss needs every feature of the batch at once, but the towers' activations need not all
be stored (Gao et al., 2021, "Scaling Deep Contrastive Learning Batch Size under Memory
Limited Setup"): features are first computed without a graph, the loss and its gradients
with respect to the features are taken over the whole batch, and then each micro-batch is
recomputed with a graph and back-propagated with its slice of those gradients. The
parameter gradients equal those of one step on the whole batch; only one micro-batch's
activations are alive at a time.
"""

from collections.abc import Callable

import torch
from torch import Tensor

from lightning_clip.models.clip import CLIPModel


def _rng_state(device: torch.device) -> tuple:
    # dropout on an accelerator draws from that device's generator, not the CPU's
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if device.type == "cuda":
        torch.cuda.set_rng_state(state[1], device)


def _loss(
    loss_fn: Callable[..., Tensor], image_features, text_features, model: CLIPModel
) -> Tensor:
    scale = model.scale().float()
    if model.logit_bias is None:
        return loss_fn(image_features, text_features, scale)
    return loss_fn(image_features, text_features, scale, model.logit_bias.float())


def grad_cache_backward(
    model: CLIPModel,
    loss_fn: Callable[..., Tensor],
    images: Tensor,
    tokens: Tensor,
    chunks: int,
    backward: Callable[[Tensor], None],
) -> Tensor:
    """Accumulate the gradients of the loss on (B, ...) images and tokens in `chunks` parts.

    `backward` runs a backward pass on a scalar (a Lightning module's `manual_backward`).
    Returns the loss, detached.
    """
    image_chunks, token_chunks = images.chunk(chunks), tokens.chunk(chunks)

    # 1. features without a graph; the random state is kept so that dropout repeats exactly
    rng_states, image_parts, text_parts = [], [], []
    with torch.no_grad():
        for image_chunk, token_chunk in zip(image_chunks, token_chunks, strict=True):
            rng_states.append(_rng_state(images.device))
            image_parts.append(model.encode_image(image_chunk).float())
            text_parts.append(model.encode_text(token_chunk).float())

    # 2. the loss over the whole batch, back to the features (and to the scale and bias)
    image_features = torch.cat(image_parts).requires_grad_()
    text_features = torch.cat(text_parts).requires_grad_()
    loss = _loss(loss_fn, image_features, text_features, model)
    backward(loss)
    image_grads = image_features.grad.split([part.shape[0] for part in image_parts])
    text_grads = text_features.grad.split([part.shape[0] for part in text_parts])

    # 3. each micro-batch again, now with a graph, carrying its share of the gradient
    after_first_pass = _rng_state(images.device)
    for index, (image_chunk, token_chunk) in enumerate(
        zip(image_chunks, token_chunks, strict=True)
    ):
        _set_rng_state(rng_states[index], images.device)
        surrogate = (model.encode_image(image_chunk).float() * image_grads[index]).sum()
        surrogate = surrogate + (model.encode_text(token_chunk).float() * text_grads[index]).sum()
        backward(surrogate)
    _set_rng_state(after_first_pass, images.device)
    return loss.detach()
