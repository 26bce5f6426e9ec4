"""Run every benchmark workload, keep their JSON lines, and rewrite bench/README.md's table.

    PYTHONPATH=. .venv/bin/python bench/run_all.py                   # everything (~30 min)
    PYTHONPATH=. .venv/bin/python bench/run_all.py --only zeroshot   # one workload
    PYTHONPATH=. .venv/bin/python bench/run_all.py --render          # README from saved lines

Each workload runs in its own process, offline, one after the other; the lines of the latest
run of each are kept in bench/results.jsonl, so `--only` refreshes part of the table.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from bench.report import render, replace_section

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results.jsonl"
README = BENCH / "README.md"
WORKLOADS = {  # name -> arguments; True when the script takes --threads
    "train_step": (["bench/train_step.py"], True),
    "train_step_jpeg": (["bench/train_step.py", "--data", "jpeg", "--steps", "10"], True),
    "train_step_unfused": (["bench/train_step.py", "--ours-unfused-adamw"], True),
    "zeroshot": (["bench/zeroshot.py"], True),
    "data_pipeline": (["bench/data_pipeline.py"], True),
    "scaling": (["bench/scaling.py"], True),
    "profile_step": (["bench/profile_step.py"], True),
    "loss_memory": (["bench/loss_memory.py"], False),
    "readers": (["bench/readers.py"], False),
}


def run_workload(name: str, threads: int | None) -> list[dict]:
    """Run one script; its JSON lines, each with the command that reproduces it."""
    arguments, takes_threads = WORKLOADS[name]
    if threads is not None and takes_threads:
        arguments = [*arguments, "--threads", str(threads)]
    command = f"PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python {shlex.join(arguments)}"
    print(f"running {name}: {command}", file=sys.stderr, flush=True)

    # nothing may reach a model hub; the progress output goes to our stderr as it comes
    environment = {**os.environ, "PYTHONPATH": str(BENCH.parent), "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run(
        [sys.executable, *arguments], cwd=BENCH.parent, env=environment,
        stdout=subprocess.PIPE, text=True, check=False,
    )  # fmt: skip
    if completed.returncode != 0:
        raise SystemExit(f"{name} failed with exit code {completed.returncode}")
    records = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    for record in records:
        print(json.dumps(record), flush=True)
    return [{**record, "name": name, "command": command} for record in records]


def load_results() -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {}
    if RESULTS.is_file():
        for line in RESULTS.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            results.setdefault(record["name"], []).append(record)
    return results


def save_results(results: dict[str, list[dict]]) -> None:
    lines = [json.dumps(record) for name in WORKLOADS for record in results.get(name, [])]
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--render", action="store_true", help="only rewrite the README table")
    parser.add_argument(
        "--threads", type=int, default=None,
        help="passed to every workload that takes it; 1 is steadier on a shared machine",
    )  # fmt: skip
    args = parser.parse_args()

    results = load_results()
    if not args.render:
        for name in args.only:
            results[name] = run_workload(name, args.threads)
            save_results(results)  # after each, so a failure later keeps what ran
    README.write_text(replace_section(README.read_text(encoding="utf-8"), render(results)))
    print(f"updated {README.relative_to(BENCH.parent)}", file=sys.stderr)


if __name__ == "__main__":
    main()
