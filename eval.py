"""Evaluate a checkpoint: zero-shot classification and image-text retrieval.

python eval.py --config conf/eval/digits.yaml --checkpoint logs/.../last.ckpt
python eval.py --config conf/eval/digits.yaml --checkpoint logs/.../last.ckpt --devices 2

With several devices each one encodes a share of the images and prompts, and every metric is
computed over all of them: the numbers equal those of one device.
"""

from jsonargparse import ActionConfigFile, ArgumentParser
from lightning_fabric import Fabric

from lightning_clip.cli import register_resolvers, run_or_exit
from lightning_clip.evaluate import (
    RetrievalSet,
    ZeroShotSet,
    evaluate_retrieval,
    evaluate_zeroshot,
    interpolate_state_dicts,
    load_module,
    markdown_sweep_table,
    markdown_table,
    read_retrieval_set,
    write_json,
    zeroshot_evaluator,
)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__.splitlines()[0], parser_mode="omegaconf+")
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_argument("--checkpoint", type=str, required=True, help="a .ckpt from train.py")
    parser.add_argument("--zeroshot", type=list[ZeroShotSet], default=[], help="zero-shot sets")
    parser.add_argument("--retrieval", type=list[RetrievalSet], default=[], help="caption sets")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--accelerator", type=str, default="auto", help="cpu, gpu, ... or auto")
    parser.add_argument("--devices", type=int, default=1, help="devices (processes) on this node")
    parser.add_argument(
        "--precision", type=str, default="32-true", help="as in Lightning, e.g. bf16-mixed"
    )
    parser.add_argument("--output", type=str | None, default=None, help="write results as JSON")
    parser.add_argument(
        "--interpolate_with",
        type=str | None,
        default=None,
        help="a second checkpoint of the same model: evaluate weight-space mixtures (WiSE-FT)",
    )
    parser.add_argument(
        "--mixing_weights",
        type=list[float],
        default=[0.0, 0.25, 0.5, 0.75, 1.0],
        help="weights of the second checkpoint: 0 is --checkpoint, 1 is --interpolate_with",
    )
    return parser


def evaluate_all(module, zeroshot_sets, retrieval_sets, batch_size, fabric) -> dict[str, float]:
    results: dict[str, float] = {}
    with fabric.autocast():
        for evaluator in zeroshot_sets:
            results.update(evaluate_zeroshot(module, evaluator))
        for name, records in retrieval_sets:
            results.update(evaluate_retrieval(module, name, records, batch_size))
    return results


def main(args: list[str] | None = None) -> dict[str, float]:
    register_resolvers()
    parser = build_parser()
    config = parser.parse_args(args)
    config = parser.instantiate(config)
    if not config.zeroshot and not config.retrieval:
        parser.error("nothing to evaluate: give --zeroshot and/or --retrieval sets")

    # read every set before the model, so a bad file costs nothing
    zeroshot_sets = [zeroshot_evaluator(spec, config.batch_size) for spec in config.zeroshot]
    retrieval_sets = [(spec.name, read_retrieval_set(spec)) for spec in config.retrieval]

    # several devices: one process each (launched here), joined by torch.distributed
    strategy = "ddp" if config.devices > 1 else "auto"
    fabric = Fabric(
        accelerator=config.accelerator,
        devices=config.devices,
        strategy=strategy,
        precision=config.precision,
    )
    fabric.launch()
    sets = (zeroshot_sets, retrieval_sets, config.batch_size, fabric)

    module = load_module(config.checkpoint).to(fabric.device)
    if config.interpolate_with is None:
        results = evaluate_all(module, *sets)
        table = markdown_table(results)
    else:
        # WiSE-FT (Wortsman et al., 2022): one evaluation per mixture of the two weight sets
        other = load_module(config.interpolate_with).to(fabric.device)
        endpoints = (module.state_dict(), other.state_dict())
        sweep = {}
        for weight in config.mixing_weights:
            module.load_state_dict(interpolate_state_dicts(*endpoints, weight))
            sweep[weight] = evaluate_all(module, *sets)
        table = markdown_sweep_table(sweep)
        results = {
            f"mix={w:g}/{key}": v for w, scores in sweep.items() for key, v in scores.items()
        }

    # every rank holds the same numbers; one reports them
    if fabric.is_global_zero:
        print(table)
        if config.output:
            write_json({"checkpoint": config.checkpoint, "results": results}, config.output)
            print(f"results written to {config.output}")
    return results


if __name__ == "__main__":
    run_or_exit(main)
