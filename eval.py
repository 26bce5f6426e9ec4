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
    load_module,
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
    return parser


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
    results: dict[str, float] = {}
    for evaluator in zeroshot_sets:
        results.update(evaluate_zeroshot(module, evaluator))
    for name, records in retrieval_sets:
        results.update(evaluate_retrieval(module, name, records, config.batch_size))

    print(markdown_table(results))
    if config.output:
        write_json({"checkpoint": config.checkpoint, "results": results}, config.output)
        print(f"results written to {config.output}")
    return results


if __name__ == "__main__":
    run_or_exit(main)
