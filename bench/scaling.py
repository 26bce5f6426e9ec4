"""W4: step time and peak memory as the global batch grows, per loss layout and gradient caching.

    PYTHONPATH=. .venv/bin/python bench/scaling.py

Modes, each on all the machine's cores:
  full        two processes (gloo on the CPU), the whole (B x B) similarity matrix on each;
  local       two processes, `local_loss`: each scores only its own rows (B/2 x B);
  single      one process, the whole batch in one step: the reference for gradient caching;
  grad_cache  one process, `grad_cache_backward` in micro-batches of the base batch size.
Each mode runs in fresh processes with the batch sizes in increasing order, so a process's
high-water mark of resident memory after the steps at a size is that size's peak.
"""

import argparse
import dataclasses
import os
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from bench.common import (
    Setup,
    autocast,
    emit,
    peak_device_mib,
    peak_rss_mib,
    pick_setup,
    scratch_dir,
    spread,
    synchronize,
)
from bench.towers import our_model, synthetic_batches, write_text_dir
from lightning_clip.grad_cache import grad_cache_backward
from lightning_clip.losses import ContrastiveLoss
from lightning_clip.models import CLIPModel
from lightning_clip.module import parameter_groups

MODES = {"full": 2, "local": 2, "single": 1, "grad_cache": 1}  # mode -> processes
GROWTH = (1, 2, 4, 8, 16)  # global batch = base batch size x each
CORES = os.cpu_count() or 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _memory_mark(setup: Setup) -> float:
    return peak_device_mib(setup) if setup.device == "cuda" else peak_rss_mib()


def _step(model: CLIPModel, trained, loss_fn, optimizer, batch: dict, mode: str, micro: int):
    """One optimizer step: forward and backward of the loss, clipping, update."""
    optimizer.zero_grad(set_to_none=True)
    if mode == "grad_cache":
        chunks = max(batch["image"].shape[0] // micro, 1)
        grad_cache_backward(
            model, loss_fn, batch["image"], batch["text"], chunks, lambda loss: loss.backward()
        )
    else:
        output = trained(batch["image"], batch["text"])
        loss_fn(output.image_features, output.text_features, output.logit_scale).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    model.clamp_logit_scale()


def _build(setup: Setup, text_dir: str, world: int, rank: int):
    model = our_model(setup, text_dir).to(setup.device)
    trained = model
    if world > 1:
        device_ids = [rank] if setup.device == "cuda" else None
        trained = DistributedDataParallel(model, device_ids=device_ids)
    optimizer = torch.optim.AdamW(parameter_groups(model), lr=1e-3, weight_decay=0.1)
    return model, trained, optimizer


def _worker(rank, world, port, mode, setup, text_dir, reps, threads, results) -> None:
    # every mode gets all the cores: one thread per process with two processes
    torch.set_num_threads(threads or max(CORES // world, 1))
    if setup.device == "cuda":
        torch.cuda.set_device(rank)
    if world > 1:
        backend = "nccl" if setup.device == "cuda" else "gloo"
        dist.init_process_group(
            backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
        )
    model, trained, optimizer = _build(setup, text_dir, world, rank)
    loss_fn = ContrastiveLoss(local_loss=mode == "local")
    micro = setup.batch_size

    # one tiny step first, so optimizer state and library caches are not counted as growth
    tiny = synthetic_batches(dataclasses.replace(setup, batch_size=2), 1, 0, seed=rank)[0]
    _step(model, trained, loss_fn, optimizer, tiny, mode, micro)
    baseline = _memory_mark(setup)

    measured = {}
    for factor in GROWTH:
        per_process = setup.batch_size * factor // world
        sized = dataclasses.replace(setup, batch_size=per_process)
        batch = synthetic_batches(sized, 1, 0, seed=rank)[0]
        batch = {key: value.to(setup.device) for key, value in batch.items()}
        seconds = []
        for rep in range(reps + 1):  # repetition 0 is the warm-up
            synchronize(setup)
            start = time.perf_counter()
            with autocast(setup):
                _step(model, trained, loss_fn, optimizer, batch, mode, micro)
            synchronize(setup)
            if rep:
                seconds.append(time.perf_counter() - start)
        measured[setup.batch_size * factor] = (seconds, _memory_mark(setup) - baseline)
    results[rank] = measured
    if world > 1:
        dist.destroy_process_group()


def _run_mode(mode: str, setup: Setup, text_dir: str, reps: int, threads: int | None) -> list[dict]:
    world = MODES[mode]
    if setup.device == "cuda":
        world = min(world, torch.cuda.device_count())
    results = mp.Manager().dict()
    arguments = (world, _free_port(), mode, setup, text_dir, reps, threads, results)
    mp.spawn(_worker, args=arguments, nprocs=world)

    rows = []
    for global_batch in results[0]:
        # ranks wait for each other in every step, so the slowest one sets the pace
        per_rep = [max(results[r][global_batch][0][i] for r in range(world)) for i in range(reps)]
        growth = [results[r][global_batch][1] for r in range(world)]
        rows.append({
            "mode": mode, "world_size": world, "global_batch": global_batch,
            "step_seconds": spread(per_rep),
            "samples_per_second": round(global_batch / sorted(per_rep)[reps // 2], 1),
            "peak_growth_mib_per_process": round(max(growth), 1),
            "peak_growth_mib_total": round(sum(growth), 1),
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="timed steps per batch size")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument(
        "--threads", type=int, default=None,
        help="threads per process (default: the cores shared among the mode's processes)",
    )  # fmt: skip
    args = parser.parse_args()
    setup = pick_setup()

    text_dir = write_text_dir(setup, scratch_dir("bench_w4_"))
    curve = [
        row
        for mode in args.modes
        for row in _run_mode(mode, setup, text_dir, args.reps, args.threads)
    ]
    emit("scaling", setup, {
        "reps": args.reps, "micro_batch": setup.batch_size,
        "memory": "device allocations" if setup.device == "cuda" else "resident set",
        "threads_per_process": args.threads or "cores / processes", "curve": curve,
    })  # fmt: skip


if __name__ == "__main__":
    main()
