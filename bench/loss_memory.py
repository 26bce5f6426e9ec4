"""Peak memory and time of the full vs local contrastive loss on two CPU processes (gloo).

    .venv/bin/python bench/loss_memory.py --batch-size 4096 --embed-dim 256

Each mode runs in fresh processes; a process reports the growth of its peak resident memory
over one forward and backward of the loss, and the wall time of the fastest of three.
Prints one JSON line per mode.
"""

import argparse
import json
import resource
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from lightning_clip.losses import ContrastiveLoss, SigmoidLoss

WORLD_SIZE = 2


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker(rank, port, mode, batch_size, embed_dim, results):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE
    )
    generator = torch.Generator().manual_seed(rank)
    images = torch.randn(batch_size, embed_dim, generator=generator, requires_grad=True)
    texts = torch.randn(batch_size, embed_dim, generator=generator, requires_grad=True)
    scale, bias = torch.tensor(10.0), torch.tensor(-10.0)
    loss_fn = SigmoidLoss() if mode == "sigmoid" else ContrastiveLoss(mode == "local")

    before, seconds = _peak_rss_mib(), []
    for _ in range(3):
        start = time.perf_counter()
        args = (F.normalize(images, dim=-1), F.normalize(texts, dim=-1), scale)
        loss = loss_fn(*args, bias) if mode == "sigmoid" else loss_fn(*args)
        loss.backward()
        seconds.append(time.perf_counter() - start)
    results[rank] = (_peak_rss_mib() - before, min(seconds))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=4096, help="per process")
    parser.add_argument("--embed-dim", type=int, default=256)
    args = parser.parse_args()

    for mode in ("full", "local", "sigmoid"):
        results = mp.Manager().dict()
        mp.spawn(
            _worker,
            args=(_free_port(), mode, args.batch_size, args.embed_dim, results),
            nprocs=WORLD_SIZE,
        )
        growth = max(results[rank][0] for rank in range(WORLD_SIZE))
        seconds = max(results[rank][1] for rank in range(WORLD_SIZE))
        print(json.dumps({
            "workload": "loss_memory", "mode": mode, "world_size": WORLD_SIZE,
            "batch_per_process": args.batch_size, "embed_dim": args.embed_dim,
            "peak_rss_growth_mib": round(growth, 1), "seconds": round(seconds, 4),
            "torch": torch.__version__, "threads": 1,
        }))  # fmt: skip


if __name__ == "__main__":
    main()
