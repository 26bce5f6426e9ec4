"""Evaluate a checkpoint: zero-shot classification and image-text retrieval.

python eval.py --config conf/eval/digits.yaml --checkpoint logs/.../last.ckpt
"""

from jsonargparse import ActionConfigFile, ArgumentParser

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
    parser.add_argument("--device", type=str, default="cpu")
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


def evaluate_all(module, zeroshot_sets, retrieval_sets, batch_size: int) -> dict[str, float]:
    results: dict[str, float] = {}
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

    module = load_module(config.checkpoint, config.device)
    if config.interpolate_with is None:
        results = evaluate_all(module, zeroshot_sets, retrieval_sets, config.batch_size)
        print(markdown_table(results))
    else:
        # WiSE-FT (Wortsman et al., 2022): one evaluation per mixture of the two weight sets
        other = load_module(config.interpolate_with, config.device)
        endpoints = (module.state_dict(), other.state_dict())
        sweep = {}
        for weight in config.mixing_weights:
            module.load_state_dict(interpolate_state_dicts(*endpoints, weight))
            sweep[weight] = evaluate_all(module, zeroshot_sets, retrieval_sets, config.batch_size)
        print(markdown_sweep_table(sweep))
        results = {
            f"mix={w:g}/{key}": v for w, scores in sweep.items() for key, v in scores.items()
        }

    if config.output:
        write_json({"checkpoint": config.checkpoint, "results": results}, config.output)
        print(f"results written to {config.output}")
    return results


if __name__ == "__main__":
    run_or_exit(main)
