"""W2: zero-shot classifier for 1000 classes x 80 templates, then 512 images; ours vs open_clip.

    PYTHONPATH=. .venv/bin/python bench/zeroshot.py

Ours is what ZeroShotEval runs: `build_zeroshot_weights` over `CLIPLitModule.encode_captions`.
open_clip's is `build_zero_shot_classifier` with its Hugging Face tokenizer, on a model with
the same architecture and weights (so both must return the same class vectors). ImageNet's
class names and templates are read from the shared CLIP prompt file at run time.
"""

import argparse
import functools
import json
import time
from pathlib import Path

import open_clip
import torch

from bench.common import (
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
from bench.towers import open_clip_model, open_clip_tokenizer, tower_factories, write_text_dir
from lightning_clip.module import CLIPLitModule
from lightning_clip.zeroshot.classifier import build_zeroshot_weights

PROMPTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "clip_zeroshot_prompts"
NUM_CLASSES, NUM_TEMPLATES, NUM_IMAGES = 1000, 80, 512
IMAGE_BATCH = 256
WARMUP_CLASSES = 20


def imagenet_prompts(path: Path) -> tuple[list[str], list[str], str]:
    """ImageNet's 1000 class names and 80 templates, or made-up ones of the same count."""
    if path.is_file():
        imagenet = json.loads(path.read_text(encoding="utf-8"))["ImageNet"]
        return imagenet["classes"], imagenet["templates"], "imagenet"
    names = [f"object kind {index} of the set" for index in range(NUM_CLASSES)]
    templates = [f"a photo {index} of a {{}}." for index in range(NUM_TEMPLATES)]
    return names, templates, "generated"


def build_ours(module: CLIPLitModule, class_names, templates) -> torch.Tensor:
    return build_zeroshot_weights(module.encode_captions, class_names, templates)


def build_open_clip(model, tokenizer, device, class_names, templates) -> torch.Tensor:
    return open_clip.build_zero_shot_classifier(
        model, tokenizer, class_names, templates, num_classes_per_batch=10, device=device
    )


@torch.no_grad()
def classify(encode_image, weights: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) images and (E, C) class vectors -> (N,) predicted classes."""
    predictions = []
    for batch in images.split(IMAGE_BATCH):
        features = encode_image(batch.to(weights.device)).float()
        predictions.append((features @ weights.float()).argmax(dim=1))
    return torch.cat(predictions)


def timed(setup, function, *args):
    synchronize(setup)
    start = time.perf_counter()
    with autocast(setup):
        result = function(*args)
    synchronize(setup)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per side")
    parser.add_argument("--prompts", type=Path, default=PROMPTS / "prompts.json")
    add_threads_argument(parser)
    args = parser.parse_args()
    apply_threads(args.threads)
    setup = pick_setup()

    # both sides share the towers' weights, so their classifiers must agree
    text_dir = write_text_dir(setup, scratch_dir("bench_w2_"))
    module = CLIPLitModule(*tower_factories(setup, text_dir), setup.embed_dim)
    module = module.to(setup.device).eval()
    theirs = open_clip_model(setup, text_dir, weights_from=module.model).to(setup.device).eval()
    tokenizer = open_clip_tokenizer(setup, text_dir)
    class_names, templates, source = imagenet_prompts(args.prompts)
    images = torch.randn(NUM_IMAGES, 3, setup.image_size, setup.image_size)

    sides = {
        "ours": (
            functools.partial(build_ours, module),
            module.model.encode_image,
        ),
        "open_clip": (
            functools.partial(build_open_clip, theirs, tokenizer, setup.device),
            functools.partial(theirs.encode_image, normalize=True),
        ),
    }
    build_seconds = {name: [] for name in sides}
    classify_seconds = {name: [] for name in sides}
    outputs = {}  # the last class vectors and predictions of each side, to compare
    for rep in range(args.reps + 1):
        # repetition 0 warms up on a few classes; the order alternates
        names = class_names[:WARMUP_CLASSES] if rep == 0 else class_names
        for name in list(sides)[rep % 2 :] + list(sides)[: rep % 2]:
            build, encode_image = sides[name]
            weights, seconds = timed(setup, build, names, templates)
            predictions, classify_time = timed(setup, classify, encode_image, weights, images)
            if rep:
                build_seconds[name].append(seconds)
                classify_seconds[name].append(classify_time)
                outputs[name] = (weights, predictions)

    ours_weights, ours_predictions = outputs["ours"]
    their_weights, their_predictions = outputs["open_clip"]
    prompts = len(class_names) * len(templates)
    emit("zeroshot", setup, {
        "reps": args.reps, "prompts_source": source, "classes": len(class_names),
        "templates": len(templates), "images": NUM_IMAGES,
        "build_seconds": {name: spread(values) for name, values in build_seconds.items()},
        "prompts_per_second": {
            name: spread([prompts / s for s in values]) for name, values in build_seconds.items()
        },
        "classify_images_per_second": {
            name: spread([NUM_IMAGES / s for s in values])
            for name, values in classify_seconds.items()
        },
        "open_clip_over_ours_build_time": paired_ratios(
            build_seconds["open_clip"], build_seconds["ours"]
        ),
        "target": {"open_clip_over_ours_build_time": ">= 2.0"},
        "class_vectors_max_abs_difference": float((ours_weights - their_weights).abs().max()),
        "same_predictions": float((ours_predictions == their_predictions).float().mean()),
    })  # fmt: skip


if __name__ == "__main__":
    main()
