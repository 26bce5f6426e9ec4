"""Export the two encoders with torch.export, and the preprocessing they need as JSON.

    python -m lightning_clip.export logs/run/checkpoints/last.ckpt exported/

writes `image_encoder.pt2` ((B, 3, H, W) pixels -> (B, E)), `text_encoder.pt2` ((B, L) token
ids -> (B, E)), both with unit-length outputs and a dynamic batch size, and
`preprocessing.json` (image size, interpolation, mean, std, crop; context length, pad and end
token ids; the logit scale). Load an encoder with `torch.export.load(path).module()`.
"""

import argparse
import json
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.export import Dim

from lightning_clip.inference import load

MAX_BATCH = 4096


class _Encoder(nn.Module):
    """One of the model's `encode_*` methods as a module that torch.export can trace."""

    def __init__(self, model: nn.Module, method: str):
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, inputs: Tensor) -> Tensor:
        return getattr(self.model, self.method)(inputs)


def export_encoders(checkpoint: str | Path, output_dir: str | Path) -> Path:
    """Write both exported encoders and `preprocessing.json` into `output_dir`."""
    loaded = load(checkpoint)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    batch = Dim("batch", min=1, max=MAX_BATCH)

    size = loaded.image_data_config["input_size"]
    images = torch.zeros(2, *size)
    image_program = torch.export.export(
        _Encoder(loaded.model, "encode_image").eval(), (images,), dynamic_shapes=({0: batch},)
    )
    torch.export.save(image_program, output_dir / "image_encoder.pt2")

    tokens = loaded.tokenizer(["a photo", "two words"])
    text_program = torch.export.export(
        _Encoder(loaded.model, "encode_text").eval(), (tokens,), dynamic_shapes=({0: batch},)
    )
    torch.export.save(text_program, output_dir / "text_encoder.pt2")

    preprocessing = {
        "image": {key: list(v) if isinstance(v, tuple) else v
                  for key, v in loaded.image_data_config.items()},
        "text": {
            "context_length": loaded.tokenizer.context_length,
            "pad_token_id": loaded.tokenizer.pad_token_id,
            "end_token_id": loaded.tokenizer.end_token_id,
            "tokenizer": type(loaded.tokenizer.tokenizer).__name__,
            "tokenizer_dir": loaded.tokenizer.tokenizer.name_or_path,
        },
        "logit_scale": loaded.model.scale().item(),
    }  # fmt: skip
    (output_dir / "preprocessing.json").write_text(json.dumps(preprocessing, indent=2) + "\n")
    return output_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a checkpoint written by train.py")
    parser.add_argument("output_dir", help="folder for the exported encoders")
    args = parser.parse_args()
    print(f"encoders exported to {export_encoders(args.checkpoint, args.output_dir)}")


if __name__ == "__main__":
    from lightning_clip.cli import run_or_exit

    run_or_exit(main)
