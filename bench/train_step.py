"""W1: the training step in our Lightning fit loop, a plain PyTorch loop, and open_clip's step.

    PYTHONPATH=. .venv/bin/python bench/train_step.py
    PYTHONPATH=. .venv/bin/python bench/train_step.py --data jpeg   # real JPEGs, 2 workers

(a) CLIPLitModule through Trainer.fit with a TensorBoard logger, Throughput and
ModelCheckpoint, gradient clipping and `log_every_n_steps` as in conf/trainer/default.yaml;
(b) the same modules, loss, optimizer, clipping and schedule in a bare loop (the floor);
(c) open_clip's CustomTextCLIP with the same architecture and weights, ClipLoss, and the
steps of open_clip's training loop, logging to TensorBoard as often as (a). Repetitions
alternate between the three, so the ratios come from one run on one machine state.
"""

import argparse
import contextlib
import functools
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import open_clip
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from timm.scheduler import CosineLRScheduler
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter

from bench.common import (
    Setup,
    add_threads_argument,
    apply_threads,
    autocast,
    emit,
    paired_ratios,
    pick_setup,
    scratch_dir,
    spread,
    synchronize,
)
from bench.data_pipeline import coco_datamodule
from bench.towers import (
    open_clip_model,
    our_model,
    parameter_count,
    synthetic_batches,
    tower_factories,
    write_text_dir,
)
from lightning_clip.callbacks import Throughput
from lightning_clip.losses import ContrastiveLoss
from lightning_clip.models import CLIPModel
from lightning_clip.module import CLIPLitModule, parameter_groups

LEARNING_RATE, WEIGHT_DECAY, WARMUP_STEPS = 1e-3, 0.1, 2
GRADIENT_CLIP = 1.0  # conf/trainer/default.yaml
DISTINCT_BATCHES = 4
VARIANTS = ("lightning", "plain", "open_clip")


@dataclass
class Repetition:
    seconds: float  # the timed steps, from the start of the first to the start of the next
    data_waits: list[float]  # per timed step, seconds spent waiting for the batch


class Clock:
    """Start times of the steps; a step's data wait is the time from there to its batch."""

    def __init__(self, setup: Setup, first: int, count: int):
        self.setup, self.first, self.last = setup, first, first + count
        self.starts: dict[int, float] = {}
        self.waits: list[float] = []

    def start(self, step: int) -> None:
        if step in (self.first, self.last):
            synchronize(self.setup)
            self.starts[step] = time.perf_counter()
        self._step_start = time.perf_counter()

    def batch_ready(self, step: int) -> None:
        if self.first <= step < self.last:
            self.waits.append(time.perf_counter() - self._step_start)

    def result(self) -> Repetition:
        return Repetition(self.starts[self.last] - self.starts[self.first], self.waits)


class LightningClock(Callback):
    """The same clock inside Trainer.fit: a step starts when the previous one ended."""

    def __init__(self, clock: Clock):
        self.clock = clock

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.clock.start(trainer.global_step)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == 0:
            self.clock.start(0)
        self.clock.batch_ready(trainer.global_step)


def _cycle(loader_factory: Callable[[], DataLoader]) -> Iterator[dict]:
    # one loader per repetition, as Trainer.fit makes one: its workers then live across epochs
    loader = loader_factory()
    while True:
        yield from loader


def run_lightning(module, loaders, setup, args, workdir: Path, extra_callbacks=()) -> Repetition:
    """(a): Trainer.fit for warm-up + timed steps; only the timed steps count."""
    clock = Clock(setup, args.warmup_steps, args.steps)
    trainer = pl.Trainer(
        accelerator=setup.device,
        devices=1,
        precision="bf16-mixed" if setup.precision == "bf16" else "32-true",
        max_steps=args.warmup_steps + args.steps + 1,
        gradient_clip_val=GRADIENT_CLIP,
        log_every_n_steps=args.log_every,
        logger=TensorBoardLogger(workdir, name="lightning"),
        callbacks=[
            Throughput(),
            ModelCheckpoint(dirpath=workdir / "checkpoints", save_top_k=0, save_last=True),
            LightningClock(clock),
            *extra_callbacks,
        ],
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_progress_bar=args.progress_bar,
        enable_model_summary=False,
    )
    # the progress bar writes to stdout, which carries only the JSON line
    with contextlib.redirect_stdout(sys.stderr):
        trainer.fit(module, train_dataloaders=loaders["lightning"]())
    return clock.result()


def make_plain_state(model: CLIPModel, optimizer, total_steps: int) -> tuple:
    """Loss, optimizer and schedule of (b), built as CLIPLitModule builds them."""
    optimizer = optimizer(parameter_groups(model))
    scheduler = CosineLRScheduler(
        optimizer, t_initial=total_steps - WARMUP_STEPS, warmup_t=WARMUP_STEPS,
        warmup_lr_init=1e-6, warmup_prefix=True, t_in_epochs=False,
    )  # fmt: skip
    return ContrastiveLoss(), optimizer, scheduler


def run_plain(model, state, batches, setup, args) -> Repetition:
    """(b): the floor, with nothing but what a correct step needs."""
    loss_fn, optimizer, scheduler = state
    clock = Clock(setup, args.warmup_steps, args.steps)
    model.train()
    for step in range(args.warmup_steps + args.steps + 1):
        clock.start(step)
        batch = next(batches)
        clock.batch_ready(step)
        images = batch["image"].to(setup.device, non_blocking=True)
        tokens = batch["text"].to(setup.device, non_blocking=True)

        with autocast(setup):
            output = model(images, tokens)
            loss = loss_fn(output.image_features, output.text_features, output.logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRADIENT_CLIP)
        optimizer.step()
        scheduler.step_update(num_updates=step + 1)
        model.clamp_logit_scale()
    return clock.result()


def _open_clip_lr(step: int, total: int) -> float:
    """open_clip's schedule: linear warm-up, then cosine to zero."""
    if step < WARMUP_STEPS:
        return LEARNING_RATE * (step + 1) / WARMUP_STEPS
    progress = (step - WARMUP_STEPS) / max(total - WARMUP_STEPS, 1)
    return 0.5 * (1 + math.cos(math.pi * progress)) * LEARNING_RATE


def run_open_clip(model, state, batches, setup, args) -> Repetition:
    """(c): open_clip's training step: schedule, step, clipping, clamp, periodic logging."""
    loss_fn, optimizer, writer = state
    clock = Clock(setup, args.warmup_steps, args.steps)
    total = args.warmup_steps + args.steps + 1
    model.train()
    for step in range(total):
        clock.start(step)
        for group in optimizer.param_groups:
            group["lr"] = _open_clip_lr(step, total)
        batch = next(batches)
        clock.batch_ready(step)
        images = batch["image"].to(setup.device, non_blocking=True)
        texts = batch["text"].to(setup.device, non_blocking=True)

        optimizer.zero_grad()
        with autocast(setup):
            loss = loss_fn(**model(images, texts))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRADIENT_CLIP, norm_type=2.0)
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))

        if step % args.log_every == 0:
            writer.add_scalar("train/loss", loss.item(), step)
            writer.add_scalar("train/scale", model.logit_scale.exp().item(), step)
            writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
    return clock.result()


def _open_clip_groups(model) -> list[dict]:
    """open_clip's split: no weight decay on gains, biases and the scale."""
    exempt = [p for n, p in model.named_parameters() if p.ndim < 2 or "logit_scale" in n]
    rest = [p for n, p in model.named_parameters() if p.ndim >= 2 and "logit_scale" not in n]
    return [{"params": exempt, "weight_decay": 0.0}, {"params": rest}]


def _check_same_work(ours: CLIPModel, theirs, batch: dict) -> float:
    """Loss of both models on one batch in eval mode; equal weights must give equal losses."""
    ours.eval()
    theirs.eval()
    device = next(ours.parameters()).device
    images, tokens = batch["image"].to(device), batch["text"].to(device)
    with torch.no_grad():
        output = ours(images, tokens)
        loss = ContrastiveLoss()(output.image_features, output.text_features, output.logit_scale)
        other = open_clip.ClipLoss()(**theirs(images, tokens))
    return abs(loss.item() - other.item())


def _loaders(setup, args, module, workdir: Path) -> dict[str, Callable[[], DataLoader]]:
    """Per variant, a builder of its training loader: in-memory batches or real JPEGs."""
    if args.data == "jpeg":
        datamodule = coco_datamodule(
            workdir, module.tokenizer, module.image_data_config, setup.batch_size, args.workers
        )
        datamodule.setup("fit")
        return dict.fromkeys(VARIANTS, datamodule.train_dataloader)
    pad_id = module.model.text_tower.tokenizer.pad_token_id
    batches = synthetic_batches(setup, DISTINCT_BATCHES, pad_id)
    length = args.warmup_steps + args.steps + 1
    dataset = [batches[index % len(batches)] for index in range(length)]
    return dict.fromkeys(VARIANTS, lambda: DataLoader(dataset, batch_size=None))


def _summary(setup, times: dict[str, list[Repetition]], args) -> dict:
    seconds = {name: [rep.seconds for rep in reps] for name, reps in times.items()}
    samples = setup.batch_size * args.steps
    speed = {name: [samples / s for s in values] for name, values in seconds.items()}
    waits = {name: [w for rep in reps for w in rep.data_waits] for name, reps in times.items()}
    step_ms = {
        name: spread([1000 * s / args.steps for s in values]) for name, values in seconds.items()
    }
    return {
        "samples_per_second": {name: spread(values) for name, values in speed.items()},
        "step_ms": step_ms,
        "max_data_wait_ms": {name: round(1000 * max(values), 1) for name, values in waits.items()},
        "lightning_over_plain_step_time": paired_ratios(seconds["lightning"], seconds["plain"]),
        "lightning_over_open_clip_samples_per_second": paired_ratios(
            speed["lightning"], speed["open_clip"]
        ),
        "lightning_overhead_ms_per_step": round(
            step_ms["lightning"]["median"] - step_ms["plain"]["median"], 2
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per variant")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per repetition")
    parser.add_argument("--warmup-steps", type=int, default=3, help="untimed, every repetition")
    parser.add_argument("--data", choices=("synthetic", "jpeg"), default="synthetic")
    parser.add_argument("--workers", type=int, default=2, help="loader workers with --data jpeg")
    parser.add_argument("--log-every", type=int, default=10, help="as conf/trainer/default.yaml")
    parser.add_argument("--no-progress-bar", dest="progress_bar", action="store_false")
    parser.add_argument(
        "--ours-unfused-adamw", action="store_true",
        help="what-if: (a) and (b) use AdamW(fused=False), open_clip's default, instead of "
        "the fused update CLIPLitModule picks by default",
    )  # fmt: skip
    add_threads_argument(parser)
    args = parser.parse_args()
    apply_threads(args.threads)
    setup = pick_setup()

    workdir = scratch_dir("bench_w1_")
    text_dir = write_text_dir(setup, workdir)
    image_tower, text_tower = tower_factories(setup, text_dir)
    optimizer = functools.partial(torch.optim.AdamW, lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    # CLIPLitModule fuses Adam(W) unless told otherwise; the plain loop does the same update
    ours_optimizer = functools.partial(optimizer, fused=not args.ours_unfused_adamw)
    module = CLIPLitModule(
        image_tower, text_tower, setup.embed_dim, optimizer=ours_optimizer,
        warmup_steps=WARMUP_STEPS,
    ).to(setup.device)  # fmt: skip
    plain = our_model(setup, text_dir).to(setup.device)
    theirs = open_clip_model(setup, text_dir, weights_from=plain).to(setup.device)
    loaders = _loaders(setup, args, module, workdir)
    loss_gap = _check_same_work(plain, theirs, next(iter(loaders["plain"]())))

    plain_state = make_plain_state(plain, ours_optimizer, args.warmup_steps + args.steps + 1)
    theirs_state = (
        open_clip.ClipLoss(),
        optimizer(_open_clip_groups(theirs)),
        SummaryWriter(str(workdir / "open_clip")),
    )
    runs = {
        "lightning": lambda: run_lightning(module, loaders, setup, args, workdir),
        "plain": lambda: run_plain(plain, plain_state, _cycle(loaders["plain"]), setup, args),
        "open_clip": lambda: run_open_clip(
            theirs, theirs_state, _cycle(loaders["open_clip"]), setup, args
        ),
    }

    # repetition 0 warms every variant up; the order rotates so none always runs first
    times: dict[str, list[Repetition]] = {name: [] for name in VARIANTS}
    for rep in range(args.reps + 1):
        for name in VARIANTS[rep % 3 :] + VARIANTS[: rep % 3]:
            result = runs[name]()
            if rep:
                times[name].append(result)

    emit("train_step", setup, {
        "data": args.data, "workers": args.workers if args.data == "jpeg" else 0,
        "reps": args.reps, "steps": args.steps, "batch_size": setup.batch_size,
        "ours_unfused_adamw": args.ours_unfused_adamw,
        **_summary(setup, times, args),
        "targets": {"lightning_over_plain_step_time": "<= 1.03",
                    "lightning_over_open_clip_samples_per_second": ">= 1.10"},
        "parameters": {"ours": parameter_count(plain), "open_clip": parameter_count(theirs)},
        "loss_difference_same_weights": loss_gap,
    })  # fmt: skip


if __name__ == "__main__":
    main()
