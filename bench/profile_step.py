"""Where W1's Lightning step spends time beyond the plain loop, and which lines sync the host.

    PYTHONPATH=. .venv/bin/python bench/profile_step.py

Runs W1's (a) and (b) with the same timers around the work both do (forward, loss, backward,
clipping, optimizer update), so what is left of (a)'s step beyond (b)'s is framework work;
times the per-step hooks of Lightning and of our package inside it; and counts, per timed
step and per calling line, the operations that wait for an accelerator when there is one:
`.item()`, `.tolist()`, `bool()`/`float()` of a tensor, and `torch.tensor(python_number)`
(what `self.log` does with a float: a host-to-device copy). On the CPU these cost little;
the counts say what each line would cost on a GPU.
"""

import argparse
import collections
import functools
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, RichProgressBar, TQDMProgressBar
from pytorch_lightning.plugins.precision import Precision

from bench.common import add_threads_argument, apply_threads, emit, pick_setup, scratch_dir
from bench.towers import our_model, tower_factories, write_text_dir
from bench.train_step import (
    LEARNING_RATE,
    WARMUP_STEPS,
    WEIGHT_DECAY,
    _cycle,
    _loaders,
    make_plain_state,
    run_lightning,
    run_plain,
)
from lightning_clip.callbacks import Throughput
from lightning_clip.losses import ContrastiveLoss
from lightning_clip.models import CLIPModel
from lightning_clip.module import CLIPLitModule

PACKAGE = str(Path(__file__).resolve().parents[1] / "lightning_clip")
LIGHTNING_ONLY = (
    "self.log (all calls)",
    "on_before_optimizer_step",
    "Throughput.on_train_batch_end",
    "progress bar (rich)",
    "progress bar (tqdm)",
)
SYNCS = {  # owner, attribute, when a call counts
    "item": (torch.Tensor, "item", None),
    "tolist": (torch.Tensor, "tolist", None),
    "bool": (torch.Tensor, "__bool__", None),
    "float": (torch.Tensor, "__float__", None),
    "tensor_from_number": (torch, "tensor", lambda data, *a, **k: isinstance(data, int | float)),
}


class Recorder:
    """Seconds per timed function and sync counts per caller, while `active`."""

    def __init__(self):
        self.active = False
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.syncs: collections.Counter = collections.Counter()

    def timed(self, name: str, function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                if self.active:
                    self.seconds[name] += time.perf_counter() - start

        return wrapper

    def counted(self, kind: str, function, condition):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            if self.active and (condition is None or condition(*args, **kwargs)):
                caller = _caller()
                if caller is not None:
                    self.syncs[(kind, caller)] += 1
            return function(*args, **kwargs)

        return wrapper


def _where(frame) -> str:
    filename = frame.f_code.co_filename
    if filename.startswith(PACKAGE):
        filename = "lightning_clip" + filename[len(PACKAGE) :]
    return f"{filename.split('site-packages/')[-1]}:{frame.f_lineno}"


def _caller() -> str | None:
    """The nearest line of our package on the stack (and the line that made the call).

    None for calls made inside torch: the CPU optimizer reads its step counters with
    `.item()`, which on a GPU are host tensors too, so they never wait for the device.
    """
    call_site = sys._getframe(2)  # 0 is this function, 1 the wrapper
    if "/torch/" in call_site.f_code.co_filename:
        return None
    frame = call_site
    while frame is not None:
        if frame.f_code.co_filename.startswith(PACKAGE):
            ours = _where(frame)
            return ours if frame is call_site else f"{ours} via {_where(call_site)}"
        frame = frame.f_back
    return _where(call_site)


class Window(Callback):
    """Turns the recorder on for the timed steps only, as W1's clock counts them."""

    def __init__(self, recorder: Recorder, first: int, count: int):
        self.recorder, self.first, self.last = recorder, first, first + count

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.recorder.active = self.first <= trainer.global_step < self.last


def _instrument(recorder: Recorder) -> list:
    """Wrap the timed functions and the sync points; returns what to restore."""
    targets = {
        # the work both loops do
        "model forward": (CLIPModel, "forward"),
        "loss": (ContrastiveLoss, "forward"),
        "backward": (torch.Tensor, "backward"),
        "gradient clipping": (torch.nn.utils, "clip_grad_norm_"),
        "optimizer.step": (torch.optim.AdamW, "step"),
        # Lightning runs the closure (training_step, backward, hooks) inside optimizer.step
        "closure": (Precision, "_wrap_closure"),
        # what only the Lightning loop does
        "self.log (all calls)": (pl.LightningModule, "log"),
        "on_before_optimizer_step": (CLIPLitModule, "on_before_optimizer_step"),
        "Throughput.on_train_batch_end": (Throughput, "on_train_batch_end"),
        "progress bar (rich)": (RichProgressBar, "on_train_batch_end"),
        "progress bar (tqdm)": (TQDMProgressBar, "on_train_batch_end"),
    }
    originals = []
    for name, (owner, attribute) in targets.items():
        originals.append((owner, attribute, vars(owner).get(attribute)))
        setattr(owner, attribute, recorder.timed(name, getattr(owner, attribute)))
    for kind, (owner, attribute, condition) in SYNCS.items():
        originals.append((owner, attribute, vars(owner).get(attribute)))
        setattr(owner, attribute, recorder.counted(kind, getattr(owner, attribute), condition))
    return originals


def _components(recorder: Recorder, step_seconds: float, steps: int) -> dict[str, float]:
    """Milliseconds per step of the work both loops share, and of everything else."""
    seconds = dict(recorder.seconds)
    update = seconds.get("optimizer.step", 0.0) - seconds.get("closure", 0.0)
    shared = {
        "forward": seconds.get("model forward", 0.0),
        "loss": seconds.get("loss", 0.0),
        "backward": seconds.get("backward", 0.0),
        "gradient clipping": seconds.get("gradient clipping", 0.0),
        "optimizer update": update,
    }
    shared["everything else"] = step_seconds - sum(shared.values())
    return {name: round(1000 * value / steps, 2) for name, value in shared.items()}


class _Windowed:
    """Batches for run_plain that switch the recorder on for the timed steps only."""

    def __init__(self, batches, recorder: Recorder, first: int, count: int):
        self.batches, self.recorder = batches, recorder
        self.first, self.last, self.drawn = first, first + count, 0

    def __next__(self):
        self.recorder.active = self.first <= self.drawn < self.last
        self.drawn += 1
        return next(self.batches)


def _restore(originals: list) -> None:
    for owner, attribute, original in reversed(originals):
        if original is None:
            delattr(owner, attribute)
        else:
            setattr(owner, attribute, original)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup-steps", type=int, default=3)
    add_threads_argument(parser)
    args = parser.parse_args()
    apply_threads(args.threads)
    setup = pick_setup()
    run_args = argparse.Namespace(
        steps=args.steps, warmup_steps=args.warmup_steps, log_every=10, progress_bar=True,
        data="synthetic", workers=0,
    )  # fmt: skip

    workdir = scratch_dir("bench_profile_")
    text_dir = write_text_dir(setup, workdir)
    # the fused update CLIPLitModule picks by default, given to both loops alike
    optimizer = functools.partial(
        torch.optim.AdamW, lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY, fused=True
    )
    module = CLIPLitModule(
        *tower_factories(setup, text_dir), setup.embed_dim,
        optimizer=optimizer, warmup_steps=WARMUP_STEPS,
    )  # fmt: skip
    loaders = _loaders(setup, run_args, module, workdir)
    run_lightning(module, loaders, setup, run_args, workdir)  # warm-up, not instrumented

    plain = our_model(setup, text_dir)
    plain_state = make_plain_state(plain, optimizer, args.warmup_steps + args.steps + 1)
    run_plain(plain, plain_state, _cycle(loaders["plain"]), setup, run_args)  # warm-up

    recorders = {"lightning": Recorder(), "plain": Recorder()}
    originals = _instrument(recorders["lightning"])
    try:
        window = Window(recorders["lightning"], args.warmup_steps, args.steps)
        lightning = run_lightning(module, loaders, setup, run_args, workdir, [window])
    finally:
        _restore(originals)
    originals = _instrument(recorders["plain"])
    try:
        batches = _Windowed(
            _cycle(loaders["plain"]), recorders["plain"], args.warmup_steps, args.steps
        )
        plain_result = run_plain(plain, plain_state, batches, setup, run_args)
    finally:
        _restore(originals)

    step_seconds = {"lightning": lightning.seconds, "plain": plain_result.seconds}
    components = {
        name: _components(recorders[name], step_seconds[name], args.steps) for name in recorders
    }
    lightning_hooks = {
        name: round(1000 * seconds / args.steps, 2)
        for name, seconds in recorders["lightning"].seconds.items()
        if name in LIGHTNING_ONLY
    }
    syncs = {
        f"{kind} @ {where}": round(count / args.steps, 2)
        for (kind, where), count in recorders["lightning"].syncs.most_common()
    }
    emit("profile_step", setup, {
        "steps": args.steps,
        "step_ms": {name: round(1000 * s / args.steps, 2) for name, s in step_seconds.items()},
        "components_ms_per_step": components, "lightning_hooks_ms_per_step": lightning_hooks,
        "host_syncs_per_step": syncs,
        "note": "hooks are part of 'everything else'; self.log calls also count in the hooks",
    })  # fmt: skip


if __name__ == "__main__":
    main()
