"""Optimizer steps with a non-finite loss or gradient are skipped, counted, and stop a run."""

import math

import pytest
import torch
from pytorch_lightning import Callback

from lightning_clip.numerics import NonFiniteGuard, NonFiniteTrainingError
from tests.test_resume import Recorder, _fit, _subset


class PoisonedLoss(torch.nn.Module):
    def __init__(self, clean: torch.nn.Module):
        super().__init__()
        self.clean, self.poisoned = clean, False

    def forward(self, *features, **ids):
        loss = self.clean(*features, **ids)
        return loss * math.nan if self.poisoned else loss


class Poison(Callback):
    """Makes the loss (or one gradient) of chosen optimizer steps non-finite."""

    def __init__(self, loss_steps=(), grad_steps=()):
        self.loss_steps, self.grad_steps = set(loss_steps), set(grad_steps)
        self.weights, self.hook = {}, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        step = trainer.global_step
        if not isinstance(pl_module.loss_fn, PoisonedLoss):
            pl_module.loss_fn = PoisonedLoss(pl_module.loss_fn)
        pl_module.loss_fn.poisoned = step in self.loss_steps
        if step in self.grad_steps:
            # a finite loss whose gradient overflows in one parameter
            self.hook = pl_module.model.logit_scale.register_hook(lambda grad: grad * math.inf)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.hook is not None:
            self.hook = self.hook.remove()
        self.weights[trainer.global_step] = {
            name: value.detach().clone() for name, value in pl_module.state_dict().items()
        }


def test_guard_message_names_the_step_and_last_finite_values():
    guard = NonFiniteGuard(max_consecutive=3)
    guard.good(step=4, loss=2.5, logit_scale=14.3)
    guard.bad(step=5)
    guard.good(step=6, loss=2.25, logit_scale=14.5)  # a good step resets the run of bad ones
    guard.bad(step=7)
    guard.bad(step=8)
    with pytest.raises(NonFiniteTrainingError) as raised:
        guard.bad(step=9)
    message = str(raised.value)
    assert "stopped at step 9" in message and "from step 7" in message
    assert "loss 2.25" in message and "logit scale 14.5 at step 6" in message
    assert guard.skipped_total == 4


@pytest.mark.slow
@pytest.mark.parametrize("clip", [[], ["--trainer.gradient_clip_val", "0.5"]], ids=["", "clip"])
def test_bad_steps_leave_the_weights_and_training_goes_on(tmp_path, digits_root, clip):
    train_file = _subset(digits_root, tmp_path, 142)
    poison, recorder = Poison(loss_steps={3, 4}, grad_steps={8}), Recorder()
    cli = _fit(tmp_path, digits_root, train_file, *clip, callbacks=[poison, recorder])

    assert cli.trainer.global_step == 20
    # the step counter moves on, the weights do not
    for skipped in (4, 5, 9):
        for name, value in poison.weights[skipped].items():
            assert torch.equal(value, poison.weights[skipped - 1][name]), (skipped, name)
    changed = [
        name for name, value in poison.weights[6].items()
        if not torch.equal(value, poison.weights[5][name])
    ]  # fmt: skip
    assert "model.logit_scale" in changed
    assert cli.model.nonfinite.skipped_total == 3
    assert cli.trainer.callback_metrics["train/nonfinite_steps"] == 3
    assert all(value.isfinite().all() for value in cli.model.parameters())


@pytest.mark.slow
def test_too_many_bad_steps_in_a_row_stop_the_run(tmp_path, digits_root):
    train_file = _subset(digits_root, tmp_path, 142)
    poison = Poison(loss_steps=range(5, 20))
    with pytest.raises(NonFiniteTrainingError, match=r"stopped at step 7: 3 optimizer steps"):
        _fit(tmp_path, digits_root, train_file, "--model.max_nonfinite_steps", "3",
             callbacks=[poison])  # fmt: skip


@pytest.mark.slow
def test_the_guard_changes_nothing_when_every_step_is_finite(tmp_path, digits_root):
    # with the guard on, clipping happens in our hook (one gradient norm for both)
    train_file = _subset(digits_root, tmp_path, 142)
    runs = []
    for guard in ("0", "10"):
        recorder = Recorder()
        _fit(tmp_path / guard, digits_root, train_file, "--trainer.gradient_clip_val", "0.5",
             "--model.max_nonfinite_steps", guard, callbacks=[recorder])  # fmt: skip
        runs.append(recorder.losses)
    assert len(runs[0]) == 20
    torch.testing.assert_close(runs[1], runs[0], atol=1e-6, rtol=0)


@pytest.mark.slow
def test_adamw_runs_fused_unless_the_config_says_otherwise(tmp_path, digits_root):
    train_file = _subset(digits_root, tmp_path, 142)
    default = _fit(tmp_path / "default", digits_root, train_file, "--trainer.max_steps", "2")
    assert default.trainer.optimizers[0].defaults["fused"] is True
    chosen = _fit(tmp_path / "chosen", digits_root, train_file, "--trainer.max_steps", "2",
                  "--model.optimizer", "torch.optim.AdamW", "--model.optimizer.fused", "false",
                  "--model.optimizer.lr", "0.01")  # fmt: skip
    optimizer = chosen.trainer.optimizers[0]
    assert optimizer.defaults["fused"] is False and optimizer.defaults["lr"] == 0.01
