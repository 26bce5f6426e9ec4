"""What every workload shares: device and sizes, repetition statistics, memory, one JSON line."""

import argparse
import atexit
import contextlib
import importlib.metadata
import json
import resource
import shutil
import statistics
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

RATIO_DIGITS = 3


@dataclass(frozen=True)
class Setup:
    """Device, precision and sizes of one run; larger on a GPU, small enough for 2 CPU cores."""

    device: str
    precision: str  # "fp32" on the CPU, "bf16" autocast on a GPU
    batch_size: int
    image_size: int
    embed_dim: int
    text_width: int
    text_layers: int
    context_length: int


def pick_setup() -> Setup:
    if torch.cuda.is_available():
        return Setup("cuda", "bf16", 256, 128, 256, 256, 4, 32)
    return Setup("cpu", "fp32", 32, 64, 256, 128, 2, 32)


def scratch_dir(prefix: str) -> Path:
    """A temporary folder removed when the process exits (W1 writes checkpoints there)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads", type=int, default=None,
        help="intra-op threads (default: torch's, one per core); 1 is steadier on a shared machine",
    )  # fmt: skip


def apply_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)


def autocast(setup: Setup):
    """bf16 autocast on a GPU; on the CPU everything stays fp32."""
    if setup.precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize(setup: Setup) -> None:
    # kernels run asynchronously on a GPU: a timer read without this measures the launches
    if setup.device == "cuda":
        torch.cuda.synchronize()


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max of per-repetition values, rounded for the JSON line."""
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


def paired_ratios(numerators: list[float], denominators: list[float]) -> dict[str, float]:
    """Ratios of repetitions run side by side: the median ratio and its range.

    Pairing repetition i with repetition i cancels slow drifts of the machine (other jobs on
    the same cores) that a ratio of two medians would keep.
    """
    values = [n / d for n, d in zip(numerators, denominators, strict=True)]
    return {
        "median": round(statistics.median(values), RATIO_DIGITS),
        "min": round(min(values), RATIO_DIGITS),
        "max": round(max(values), RATIO_DIGITS),
    }


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def peak_device_mib(setup: Setup) -> float | None:
    if setup.device != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(setup: Setup) -> dict:
    """Library versions, threads and device: what a number depends on besides the code."""
    device_name = torch.cuda.get_device_name() if setup.device == "cuda" else "cpu"
    return {
        "torch": torch.__version__,
        "lightning": _version("pytorch-lightning"),
        "timm": _version("timm"),
        "transformers": _version("transformers"),
        "open_clip": _version("open-clip-torch"),
        "threads": torch.get_num_threads(),
        "device_name": device_name,
        "setup": asdict(setup),
    }


def emit(workload: str, setup: Setup, results: dict) -> None:
    """Print the workload's one JSON line: results, peak memory and environment."""
    record = {"workload": workload, **results, "peak_rss_mib": peak_rss_mib()}
    device_peak = peak_device_mib(setup)
    if device_peak is not None:
        record["peak_device_mib"] = device_peak
    record.update(environment(setup))
    print(json.dumps(record), flush=True)
