"""Fold a LoRA-trained checkpoint's adapters into its weights: a plain checkpoint that loads
without peft layers and computes the same features.

    python -m lightning_clip.merge_lora logs/run/checkpoints/last.ckpt merged.ckpt
"""

import argparse
import copy
from pathlib import Path

import torch

from lightning_clip.checkpoint_io import AtomicCheckpointIO
from lightning_clip.evaluate import load_module


def merge_checkpoint(source: str | Path, target: str | Path) -> Path:
    """Write `target`: `source` with adapters merged and `lora` removed from its config."""
    module = load_module(source)
    for tower in (module.model.image_tower, module.model.text_tower):
        tower.merge_lora()

    checkpoint = torch.load(source, map_location="cpu", weights_only=False)
    checkpoint["state_dict"] = module.state_dict()
    hparams = copy.deepcopy(checkpoint["hyper_parameters"])
    for tower_key in ("image_tower", "text_tower"):
        hparams[tower_key].get("init_args", {}).pop("lora", None)
    checkpoint["hyper_parameters"] = hparams
    # training state belongs to the adapters that no longer exist
    for key in ("optimizer_states", "lr_schedulers"):
        checkpoint.pop(key, None)

    AtomicCheckpointIO().save_checkpoint(checkpoint, target)
    return Path(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a checkpoint trained with LoRA adapters")
    parser.add_argument("output", help="where to write the merged checkpoint")
    args = parser.parse_args()
    print(f"merged checkpoint written to {merge_checkpoint(args.checkpoint, args.output)}")


if __name__ == "__main__":
    from lightning_clip.cli import run_or_exit

    run_or_exit(main)
