"""Skip optimizer steps whose loss or gradients are not finite; stop after too many in a row."""

from dataclasses import asdict, dataclass

import torch
from torch import Tensor


class NonFiniteTrainingError(RuntimeError):
    """Too many consecutive optimizer steps had a non-finite loss or gradient."""


def all_finite(loss: Tensor, grad_norm: Tensor | None = None) -> Tensor:
    """A 0-dim bool tensor, True when the loss and the gradients' total norm are finite.

    The total norm is finite exactly when every gradient element is.
    """
    finite = torch.isfinite(loss.detach()).all()
    if grad_norm is not None:
        finite = finite & torch.isfinite(grad_norm)
    return finite


@dataclass
class NonFiniteGuard:
    """Counts bad steps and remembers the last good one, for the log and the error message."""

    max_consecutive: int
    skipped_total: int = 0
    consecutive: int = 0
    first_bad_step: int = -1
    last_finite_step: int = -1
    last_finite_loss: float = float("nan")
    last_finite_logit_scale: float = float("nan")

    def good(self, step: int, loss: float, logit_scale: float) -> None:
        self.consecutive = 0
        self.last_finite_step, self.last_finite_loss = step, loss
        self.last_finite_logit_scale = logit_scale

    def bad(self, step: int) -> None:
        """Record a skipped step; raises once `max_consecutive` bad steps came in a row."""
        if self.consecutive == 0:
            self.first_bad_step = step
        self.skipped_total += 1
        self.consecutive += 1
        if self.consecutive >= self.max_consecutive:
            raise NonFiniteTrainingError(
                f"training stopped at step {step}: {self.consecutive} optimizer steps in a row "
                f"(from step {self.first_bad_step}) had a non-finite loss or gradient and were "
                f"skipped. Last finite values: loss {self.last_finite_loss:.6g} and logit scale "
                f"{self.last_finite_logit_scale:.6g} at step {self.last_finite_step}. Try a "
                "lower learning rate, gradient clipping (trainer.gradient_clip_val), a lower "
                "model.max_logit_scale or bf16 instead of fp16"
            )

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
