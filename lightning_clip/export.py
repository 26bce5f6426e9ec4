"""Export the two encoders with torch.export (and ONNX), and their preprocessing as JSON.

    python -m lightning_clip.export logs/run/checkpoints/last.ckpt exported/

writes `image_encoder.pt2` ((B, 3, H, W) pixels -> (B, E)), `text_encoder.pt2` ((B, L) token
ids -> (B, E)), both with unit-length outputs and a dynamic batch size, and
`preprocessing.json` (image size, interpolation, mean, std, crop; context length, pad and end
token ids; the logit scale). Load an encoder with `torch.export.load(path).module()`.

When the `onnx` and `onnxscript` packages are installed it also writes `image_encoder.onnx`
and `text_encoder.onnx` (opset chosen by torch, input `inputs`, output `features`, dynamic
batch), for ONNX Runtime and other engines; `--no-onnx` skips them.
"""

import argparse
import importlib.util
import json
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.export import Dim

from lightning_clip.errors import InputError
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


def onnx_available() -> bool:
    return all(importlib.util.find_spec(name) for name in ("onnx", "onnxscript"))


def _save(program: torch.export.ExportedProgram, path: Path, onnx: bool) -> list[str]:
    torch.export.save(program, path.with_suffix(".pt2"))
    written = [path.with_suffix(".pt2").name]
    if onnx:
        onnx_program = torch.onnx.export(
            program, input_names=["inputs"], output_names=["features"], dynamo=True, verbose=False
        )
        onnx_program.save(path.with_suffix(".onnx"))
        written.append(path.with_suffix(".onnx").name)
    return written


def export_encoders(
    checkpoint: str | Path, output_dir: str | Path, onnx: bool | None = None
) -> Path:
    """Write both exported encoders and `preprocessing.json` into `output_dir`.

    `onnx`: also write ONNX files; by default whenever the ONNX packages are installed.
    """
    if onnx is None:
        onnx = onnx_available()
    elif onnx and not onnx_available():
        raise InputError("ONNX export needs the `onnx` and `onnxscript` packages installed")

    loaded = load(checkpoint)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    batch = Dim("batch", min=1, max=MAX_BATCH)

    size = loaded.image_data_config["input_size"]
    images = torch.zeros(2, *size)
    image_program = torch.export.export(
        _Encoder(loaded.model, "encode_image").eval(), (images,), dynamic_shapes=({0: batch},)
    )
    written = _save(image_program, output_dir / "image_encoder", onnx)

    tokens = loaded.tokenizer(["a photo", "two words"])
    text_program = torch.export.export(
        _Encoder(loaded.model, "encode_text").eval(), (tokens,), dynamic_shapes=({0: batch},)
    )
    written += _save(text_program, output_dir / "text_encoder", onnx)

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
        "files": written,
    }  # fmt: skip
    (output_dir / "preprocessing.json").write_text(json.dumps(preprocessing, indent=2) + "\n")
    return output_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a checkpoint written by train.py")
    parser.add_argument("output_dir", help="folder for the exported encoders")
    parser.add_argument(
        "--onnx",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also write ONNX files (default: when the onnx packages are installed)",
    )
    args = parser.parse_args()
    output_dir = export_encoders(args.checkpoint, args.output_dir, args.onnx)
    files = json.loads((output_dir / "preprocessing.json").read_text())["files"]
    print(f"encoders exported to {output_dir}: {', '.join(files)}, preprocessing.json")


if __name__ == "__main__":
    from lightning_clip.cli import run_or_exit

    run_or_exit(main)
