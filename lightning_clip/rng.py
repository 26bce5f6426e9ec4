"""The process's random number generator states, to save in a checkpoint and restore on resume."""

import random
from typing import Any

import numpy as np
import torch


def capture_rng_states() -> dict[str, Any]:
    states = {
        "python": random.getstate(),
        # plain Python values, so a weights-only checkpoint loader accepts them
        "numpy": [
            value.tolist() if hasattr(value, "tolist") else value for value in np.random.get_state()
        ],  # fmt: skip
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    name, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
