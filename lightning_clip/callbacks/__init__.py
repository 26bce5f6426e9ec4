"""Callbacks that measure what a CLIP model is for, and how fast it trains."""

from lightning_clip.callbacks.checkpoint import Checkpoint
from lightning_clip.callbacks.pictures import Pictures
from lightning_clip.callbacks.preemption import Preemption
from lightning_clip.callbacks.retrieval import RetrievalEval
from lightning_clip.callbacks.throughput import Throughput
from lightning_clip.callbacks.zeroshot import ZeroShotEval

__all__ = ["Checkpoint", "Pictures", "Preemption", "RetrievalEval", "Throughput", "ZeroShotEval"]
