"""The loss over two CPU processes (gloo) equals the loss over one process on the same batch."""

import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.testing import assert_close

from lightning_clip.losses import ContrastiveLoss, SigmoidLoss

WORLD_SIZE = 2
BATCH_SIZE = 8
# duplicates within a rank (captions 0 and 3) and across ranks (captions 1 and 5, images 2, 6)
IMAGE_IDS = torch.tensor([0, 1, 2, 3, 4, 5, 2, 7])
CAPTION_IDS = torch.tensor([10, 11, 12, 10, 14, 11, 16, 17])


def _data(uniform: bool = False):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(BATCH_SIZE, 6, generator=generator)
    texts = torch.randn(BATCH_SIZE, 5, generator=generator)
    image_proj = torch.randn(6, 4, generator=generator)
    text_proj = torch.randn(5, 4, generator=generator)
    if uniform:
        # every image and every text embeds to the same unit vector: all logits are equal
        images, texts = images.abs() + 1, texts.abs() + 1
        image_proj = torch.ones(6, 4)
        text_proj = torch.ones(5, 4)
    return images, texts, image_proj, text_proj


def _loss_and_grads(images, texts, image_proj, text_proj, kind, ids=None):
    image_proj = image_proj.clone().requires_grad_()
    text_proj = text_proj.clone().requires_grad_()
    bias = torch.tensor(-2.0, requires_grad=True)
    image_features = F.normalize(images @ image_proj, dim=-1)
    text_features = F.normalize(texts @ text_proj, dim=-1)
    ids = {} if ids is None else {"image_ids": ids[0], "caption_ids": ids[1]}
    if kind == "sigmoid":
        loss = SigmoidLoss()(image_features, text_features, torch.tensor(10.0), bias, **ids)
    else:
        loss_fn = ContrastiveLoss(local_loss=kind == "local")
        loss = loss_fn(image_features, text_features, torch.tensor(10.0), **ids) + 0 * bias
    loss.backward()
    return loss.detach(), image_proj.grad, text_proj.grad, bias.grad


def _worker(rank, port, kind, results, duplicates=False):
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE
    )
    images, texts, image_proj, text_proj = _data(uniform=kind == "uniform")
    shard = slice(rank * BATCH_SIZE // WORLD_SIZE, (rank + 1) * BATCH_SIZE // WORLD_SIZE)
    ids = (IMAGE_IDS[shard], CAPTION_IDS[shard]) if duplicates else None
    loss, *grads = _loss_and_grads(images[shard], texts[shard], image_proj, text_proj, kind, ids)

    # what DDP does with parameter gradients: average them over the processes
    for grad in grads:
        dist.all_reduce(grad)
        grad /= WORLD_SIZE
    dist.all_reduce(loss)
    results[rank] = (loss / WORLD_SIZE, *grads)
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("duplicates", [False, True], ids=["distinct", "duplicates"])
@pytest.mark.parametrize("kind", ["contrastive", "local", "sigmoid"])
def test_two_processes_match_one_process(kind, duplicates):
    # the local loss must equal the full loss: compare both with one full-batch process
    ids = (IMAGE_IDS, CAPTION_IDS) if duplicates else None
    reference = "sigmoid" if kind == "sigmoid" else "contrastive"
    expected = _loss_and_grads(*_data(), kind=reference, ids=ids)

    manager = mp.Manager()
    results = manager.dict()
    arguments = (_free_port(), kind, results, duplicates)
    mp.spawn(_worker, args=arguments, nprocs=WORLD_SIZE, join=True)

    for rank in range(WORLD_SIZE):
        for got, want in zip(results[rank], expected, strict=True):
            assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_equal_logits_give_log_of_the_global_batch():
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_worker, args=(_free_port(), "uniform", results), nprocs=WORLD_SIZE, join=True)
    for rank in range(WORLD_SIZE):
        # ln of the global batch (8), not of the per-process batch (4)
        assert results[rank][0].item() == pytest.approx(math.log(BATCH_SIZE), rel=1e-6)
