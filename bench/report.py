"""Markdown tables for bench/README.md from the workloads' JSON lines."""

import datetime

START = "<!-- results:start (written by bench/run_all.py; edits here are overwritten) -->"
END = "<!-- results:end -->"


def _range(stats: dict, digits: int = 1) -> str:
    return f"{stats['median']:,.{digits}f} ({stats['min']:,.{digits}f}–{stats['max']:,.{digits}f})"


def _verdict(value: float, target: str) -> str:
    bound = float(target.split()[-1])
    met = value <= bound if target.startswith("<=") else value >= bound
    return f"{'met' if met else '**missed**'} (target {target})"


def _train_step(record: dict) -> list[str]:
    speed, step, waits = record["samples_per_second"], record["step_ms"], record["max_data_wait_ms"]
    lines = [
        "| variant | samples/s | ms/step | longest data wait (ms) |",
        "|---|---:|---:|---:|",
    ]
    names = {"lightning": "(a) ours, Trainer.fit", "plain": "(b) plain loop",
             "open_clip": "(c) open_clip"}  # fmt: skip
    for key, label in names.items():
        lines.append(f"| {label} | {_range(speed[key])} | {_range(step[key])} | {waits[key]} |")
    over_plain = record["lightning_over_plain_step_time"]
    over_open_clip = record["lightning_over_open_clip_samples_per_second"]
    plain_target = record["targets"]["lightning_over_plain_step_time"]
    open_clip_target = record["targets"]["lightning_over_open_clip_samples_per_second"]
    return lines + [
        "",
        f"- (a)/(b) step time, paired by repetition: {_range(over_plain, 3)}: "
        f"{_verdict(over_plain['median'], plain_target)}; "
        f"overhead {record['lightning_overhead_ms_per_step']} ms per step",
        f"- (a)/(c) samples/s, paired by repetition: {_range(over_open_clip, 3)}: "
        f"{_verdict(over_open_clip['median'], open_clip_target)}",
        f"- same weights give the same loss in both libraries (difference "
        f"{record['loss_difference_same_weights']:.1e}); parameters: ours "
        f"{record['parameters']['ours']:,}, open_clip {record['parameters']['open_clip']:,} "
        "(ours also builds BERT's unused pooler)",
    ]


def _zeroshot(record: dict) -> list[str]:
    build, speed = record["build_seconds"], record["classify_images_per_second"]
    ratio = record["open_clip_over_ours_build_time"]
    lines = [
        f"{record['classes']} classes x {record['templates']} templates "
        f"({record['prompts_source']}), then {record['images']} images.",
        "",
        "| side | classifier build (s) | prompts/s | classify images/s |",
        "|---|---:|---:|---:|",
    ]
    for key in build:
        prompts = record["prompts_per_second"][key]["median"]
        lines.append(
            f"| {key} | {_range(build[key], 2)} | {prompts:,.0f} | {speed[key]['median']:,.0f} |"
        )
    return lines + [
        "",
        f"- open_clip / ours build time, paired: {_range(ratio, 3)}: "
        f"{_verdict(ratio['median'], record['target']['open_clip_over_ours_build_time'])}",
        f"- class vectors agree to {record['class_vectors_max_abs_difference']:.1e}; same "
        f"prediction for {100 * record['same_predictions']:.0f} % of the images",
    ]


def _data_pipeline(record: dict) -> list[str]:
    lines = [
        f"{record['images_per_epoch']} images per epoch, batch {record['batch_size']}, "
        f"{record['image_size']} px. Ours decodes JPEGs smaller where no crop loses detail "
        "(the default); `ours_full_decode` turns that off.",
        "",
        "| loader workers | ours images/s | ours_full_decode images/s | timm reference images/s "
        "| ours / reference | ours_full_decode / reference |",
        "|---:|---:|---:|---:|---|---|",
    ]
    target = record["target"]["ours_over_reference"]
    for key, value in record.items():
        if not key.startswith("workers_"):
            continue
        speed = value["images_per_second"]
        ratios = [value["ours_over_reference"], value["ours_full_decode_over_reference"]]
        cells = [_range(speed[name]) for name in ("ours", "ours_full_decode", "reference")]
        cells += [f"{_range(ratio, 3)}: {_verdict(ratio['median'], target)}" for ratio in ratios]
        lines.append(f"| {key.removeprefix('workers_')} | " + " | ".join(cells) + " |")
    return lines


def _scaling(record: dict) -> list[str]:
    lines = [
        f"Threads per process: {record['threads_per_process']}; gradient-cache micro-batch "
        f"{record['micro_batch']}; memory is the growth of the {record['memory']} over the "
        "steps (per process, and summed over processes).",
        "",
        "| mode | processes | global batch | s/step | samples/s | peak MiB / process | total |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in record["curve"]:
        lines.append(
            f"| {row['mode']} | {row['world_size']} | {row['global_batch']} | "
            f"{_range(row['step_seconds'], 2)} | {row['samples_per_second']} | "
            f"{row['peak_growth_mib_per_process']:,.0f} | {row['peak_growth_mib_total']:,.0f} |"
        )
    return lines


def _profile_step(record: dict) -> list[str]:
    components, steps = record["components_ms_per_step"], record["step_ms"]
    lines = [
        "Milliseconds per step, the same timers around both loops:",
        "",
        "| part | (a) Lightning | (b) plain |",
        "|---|---:|---:|",
        f"| whole step | {steps['lightning']} | {steps['plain']} |",
    ]
    lines += [
        f"| {name} | {value} | {components['plain'][name]} |"
        for name, value in components["lightning"].items()
    ]
    lines += ["", "Inside (a)'s 'everything else' (nested: hooks also call `self.log`):", ""]
    lines += ["| hook | ms/step |", "|---|---:|"]
    lines += [
        f"| {name} | {value} |" for name, value in record["lightning_hooks_ms_per_step"].items()
    ]
    lines += ["", "Host synchronisations per step on a GPU (counted on the CPU):", ""]
    lines += ["| operation @ line | per step |", "|---|---:|"]
    lines += [f"| `{name}` | {value} |" for name, value in record["host_syncs_per_step"].items()]
    return lines


def _loss_memory(records: list[dict]) -> list[str]:
    lines = [
        "| loss | world size | batch per process | peak memory growth (MiB) | seconds |",
        "|---|---:|---:|---:|---:|",
    ]
    for record in records:
        lines.append(
            f"| {record['mode']} | {record['world_size']} | {record['batch_per_process']:,} | "
            f"{record['peak_rss_growth_mib']:,.0f} | {record['seconds']} |"
        )
    return lines


def _readers(records: list[dict]) -> list[str]:
    lines = ["| format | workers | samples/s median | min | max |", "|---|---:|---:|---:|---:|"]
    for record in records:
        rate = record["samples_per_second"]
        lines.append(
            f"| {record['format']} | {record['workers']} | {rate['median']} | {rate['min']} "
            f"| {rate['max']} |"
        )
    return lines


SECTIONS = {  # runner name -> title, renderer
    "train_step": ("W1 training step, synthetic batches", _train_step),
    "train_step_jpeg": ("W1 training step, real JPEGs through our loader", _train_step),
    "train_step_unfused": ("W1 what-if: our side with open_clip's unfused AdamW", _train_step),
    "zeroshot": ("W2 zero-shot classifier", _zeroshot),
    "data_pipeline": ("W3 data pipeline", _data_pipeline),
    "scaling": ("W4 scaling with the global batch", _scaling),
    "profile_step": ("Profile of the Lightning step (W1 a)", _profile_step),
    "loss_memory": ("Loss memory (two gloo processes)", _loss_memory),
    "readers": ("Caption readers on real photos (training loader, samples/s)", _readers),
}


def _environment(record: dict) -> str:
    keys = ("torch", "lightning", "timm", "transformers", "open_clip")
    versions = ", ".join(f"{key} {record.get(key)}" for key in keys if record.get(key))
    return f"{record.get('device_name', 'cpu')}, {versions}"


def render(results: dict[str, list[dict]]) -> str:
    """The results section: one table per workload, with the command that produced it."""
    today = datetime.date.today().isoformat()
    first = next((lines[0] for lines in results.values() if lines and "torch" in lines[0]), {})
    blocks = [START, "", f"Latest run: {today}; {_environment(first)}.", ""]
    for name, (title, renderer) in SECTIONS.items():
        records = results.get(name)
        if not records:
            continue
        whole = name in ("loss_memory", "readers")
        body = renderer(records) if whole else renderer(records[0])
        blocks += [f"### {title}", "", "```bash", records[0]["command"], "```", "", *body, ""]
    return "\n".join(blocks + [END])


def replace_section(readme: str, section: str) -> str:
    """`readme` with the text between the markers (or a new end section) set to `section`."""
    if START in readme and END in readme:
        head, rest = readme.split(START, 1)
        return head + section + rest.split(END, 1)[1]
    return readme.rstrip("\n") + "\n\n## Latest results\n\n" + section + "\n"
