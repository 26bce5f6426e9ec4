"""CLIPLitModule: the training and validation steps, optimizer wiring and metric logging."""

import functools
import logging
import math
from collections.abc import Callable
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import OptimizerCallable
from pytorch_lightning.strategies import DDPStrategy, DeepSpeedStrategy, SingleDeviceStrategy
from pytorch_lightning.utilities import rank_zero_warn
from timm.scheduler import CosineLRScheduler
from torch import Tensor, nn

from lightning_clip import metrics
from lightning_clip.data.tokenizer import CaptionTokenizer
from lightning_clip.errors import require
from lightning_clip.grad_cache import grad_cache_backward
from lightning_clip.losses import ContrastiveLoss, SigmoidLoss, text_ids
from lightning_clip.models import CLIPModel, CLIPOutput, HFImageTower, ImageTower, TextTower
from lightning_clip.numerics import NonFiniteGuard, all_finite
from lightning_clip.rng import capture_rng_states, restore_rng_states

log = logging.getLogger(__name__)


def _with_grads(optimizer: torch.optim.Optimizer) -> list[nn.Parameter]:
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return [p for p in params if p.grad is not None]


def parameter_groups(model: nn.Module) -> list[dict[str, Any]]:
    """Split trainable parameters by weight decay and learning-rate scale.

    Exempt from decay: biases and normalisation weights (every parameter with fewer than two
    dimensions, `logit_scale` included), embedding tables, and whatever a backbone lists in
    its own `no_weight_decay()` (timm's positional embeddings and class tokens). Each group
    carries `lr_scale` (per tower, and per layer with layer-wise decay), which the
    scheduler multiplies into the learning rate.
    """
    exempt = set()
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        if isinstance(module, nn.Embedding):
            exempt.add(f"{prefix}weight")
        if hasattr(module, "no_weight_decay") and callable(module.no_weight_decay):
            exempt.update(f"{prefix}{name}" for name in module.no_weight_decay())

    lr_scales = {}
    for tower_name, tower in model.named_children():
        if hasattr(tower, "lr_scales"):
            lr_scales.update({f"{tower_name}.{n}": v for n, v in tower.lr_scales().items()})

    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        decay = parameter.ndim >= 2 and name not in exempt
        groups.setdefault((decay, lr_scales.get(name, 1.0)), []).append(parameter)

    return [
        {"params": params, "lr_scale": scale, **({} if decay else {"weight_decay": 0.0})}
        for (decay, scale), params in sorted(groups.items(), key=lambda item: item[0], reverse=True)
    ]


# per loss: the starting log-scale and logit bias (Radford et al., 2021; Zhai et al., 2023)
LOSS_DEFAULTS = {"contrastive": (math.log(1 / 0.07), None), "sigmoid": (math.log(10), -10.0)}


class CLIPLitModule(pl.LightningModule):
    """Contrastive image-text training of a `CLIPModel` over the global batch."""

    def __init__(
        self,
        image_tower: Callable[[int], ImageTower | HFImageTower],
        text_tower: Callable[[int], TextTower],
        embed_dim: int = 256,
        loss: Literal["contrastive", "sigmoid"] = "contrastive",
        init_logit_scale: float | None = None,
        init_logit_bias: float | None = None,
        max_logit_scale: float = 100.0,
        local_loss: bool = False,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        warmup_steps: int = 100,
        warmup_lr_init: float = 1e-6,
        min_lr: float = 0.0,
        compile: bool = False,
        grad_cache_chunks: int = 1,
        max_nonfinite_steps: int = 10,
        duplicates_are_positives: bool = True,
    ):
        """
        Args:
            image_tower: The image tower; built here with the shared `embed_dim`.
            text_tower: The text tower; built here with the shared `embed_dim`.
            embed_dim: Size of the shared image-text space, given to both towers.
            loss: ``contrastive`` (CLIP's softmax over the global batch) or ``sigmoid``
                (SigLIP: an independent binary task per image-caption pair, with a bias).
            init_logit_scale: Starting log of the similarity scale; by default log(1/0.07)
                as in CLIP, or log(10) for the sigmoid loss as in SigLIP.
            init_logit_bias: Starting logit bias of the sigmoid loss (default -10, as in
                SigLIP); the contrastive loss has none.
            max_logit_scale: Upper clamp of exp(logit_scale); 100 as in CLIP.
            local_loss: Contrastive loss only: score each device's rows against all gathered
                columns; same gradients, smaller similarity matrix.
            optimizer: Optimizer class and its arguments; weight decay is not applied to
                biases, normalisation weights, embeddings or `logit_scale`.
            warmup_steps: Optimizer steps of linear warmup before the cosine decay.
            warmup_lr_init: Learning rate at the first warmup step.
            min_lr: Learning rate at the end of the cosine decay.
            compile: Compile both towers with ``torch.compile`` (in place, so checkpoint
                keys do not change); the first steps are slow while it compiles.
            grad_cache_chunks: Split each batch into this many micro-batches whose
                activations are never alive together, while the loss still contrasts the
                whole batch (gradient caching). One device only, and without
                ``trainer.gradient_clip_val``, which Lightning refuses in this mode.
            max_nonfinite_steps: An optimizer step whose loss or gradient is not finite is
                skipped (the weights and optimizer state stay as they were) and counted in
                ``train/nonfinite_steps``; this many in a row stop training with an error
                naming the step and the last finite values. 0 turns the check off, which
                saves one host synchronisation per step. With fp16 mixed precision only the
                loss is checked: the gradient scaler already skips overflowing steps.
            duplicates_are_positives: When the same image, or the same caption text, occurs
                twice in a global batch, the copies count as right answers for each other
                (multi-positive targets) instead of as negatives. Short, repetitive captions
                ("a photo of a dog") make such duplicates common.
        """
        super().__init__()
        self.save_hyperparameters()
        require(embed_dim >= 1, "model.embed_dim", embed_dim, "at least 1")
        require(warmup_steps >= 0, "model.warmup_steps", warmup_steps, "0 or more")
        require(max_logit_scale > 0, "model.max_logit_scale", max_logit_scale, "positive")
        require(grad_cache_chunks >= 1, "model.grad_cache_chunks", grad_cache_chunks, ">= 1")
        require(max_nonfinite_steps >= 0, "model.max_nonfinite_steps", max_nonfinite_steps, ">= 0")
        # gradient caching runs its own backward passes, so Lightning must not
        self.automatic_optimization = grad_cache_chunks == 1

        require(loss in LOSS_DEFAULTS, "model.loss", loss, "'contrastive' or 'sigmoid'")
        default_scale, default_bias = LOSS_DEFAULTS[loss]
        if loss == "contrastive":
            require(init_logit_bias is None, "model.init_logit_bias", init_logit_bias,
                    "null with the contrastive loss, which has no bias")  # fmt: skip
        else:
            require(not local_loss, "model.local_loss", local_loss,
                    "false with the sigmoid loss, which is always computed per device")  # fmt: skip

        self.model = CLIPModel(
            image_tower(embed_dim),
            text_tower(embed_dim),
            default_scale if init_logit_scale is None else init_logit_scale,
            max_logit_scale,
            default_bias if init_logit_bias is None else init_logit_bias,
        )
        self.loss_fn = ContrastiveLoss(local_loss) if loss == "contrastive" else SigmoidLoss()
        self.optimizer = optimizer
        self.nonfinite = NonFiniteGuard(max_nonfinite_steps)
        self._step_loss: Tensor | None = None
        self._resumed_rng_states: dict | None = None
        if compile:
            self.model.image_tower.compile()
            self.model.text_tower.compile()

    @property
    def tokenizer(self) -> CaptionTokenizer:
        """Captions -> (B, L) tokens, as the text tower expects them."""
        text_tower = self.model.text_tower
        return CaptionTokenizer(text_tower.tokenizer, text_tower.context_length)

    @property
    def image_data_config(self) -> dict[str, Any]:
        """The image backbone's preprocessing: input_size, interpolation, mean, std."""
        return self.model.image_tower.data_config

    def on_fit_start(self) -> None:
        if self.hparams.grad_cache_chunks > 1 and self.trainer.world_size > 1:
            raise NotImplementedError(
                f"model.grad_cache_chunks={self.hparams.grad_cache_chunks} with "
                f"{self.trainer.world_size} devices: gradient caching runs on one device only; "
                "use more devices or gradient caching, not both"
            )
        if self.trainer.accumulate_grad_batches > 1:
            rank_zero_warn(
                f"trainer.accumulate_grad_batches={self.trainer.accumulate_grad_batches}: each "
                "micro-batch is contrasted only with itself, so the loss sees "
                "accumulate_grad_batches times fewer negatives than the effective batch "
                "suggests; use model.grad_cache_chunks, data.batch_size or trainer.devices"
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the preprocessing the weights expect travels with them, readable without the code
        checkpoint["image_data_config"] = dict(self.image_data_config)
        checkpoint["context_length"] = self.model.text_tower.context_length
        # with these a resumed run draws the same dropout masks as an uninterrupted one
        checkpoint["rng_states"] = capture_rng_states()
        checkpoint["nonfinite_steps"] = self.nonfinite.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._resumed_rng_states = checkpoint.get("rng_states")
        if "nonfinite_steps" in checkpoint:
            self.nonfinite.load_state_dict(checkpoint["nonfinite_steps"])

    def on_train_start(self) -> None:
        # restored here, after set-up and the sanity check have drawn their random numbers
        if self._resumed_rng_states is not None:
            restore_rng_states(self._resumed_rng_states)
            self._resumed_rng_states = None

    @torch.no_grad()
    def encode_captions(self, captions: list[str], batch_size: int = 256) -> Tensor:
        """Captions -> (B, E) normalised text features, in batches."""
        tokenizer, text_tower = self.tokenizer, self.model.text_tower
        features = []
        for start in range(0, len(captions), batch_size):
            tokens = tokenizer(captions[start : start + batch_size])
            # trailing padding changes no feature (the mask hides it): cut it off to save work
            tokens = tokens[:, : int(text_tower.attention_mask(tokens).sum(dim=1).max())]
            features.append(self.model.encode_text(tokens.to(self.device)))
        return torch.cat(features).float()

    def _loss_fn(self, batch: dict) -> Callable[..., Tensor]:
        """The loss, told which samples of the batch are the same image or caption."""
        if not self.hparams.duplicates_are_positives or "index" not in batch:
            return self.loss_fn
        ids = {"image_ids": batch["index"], "caption_ids": text_ids(batch["text"])}
        return functools.partial(self.loss_fn, **ids)

    def _shared_step(self, batch: dict) -> tuple[Tensor, CLIPOutput]:
        output = self.model(batch["image"], batch["text"])
        features = (output.image_features, output.text_features, output.logit_scale)
        if output.logit_bias is not None:
            features += (output.logit_bias,)
        return self._loss_fn(batch)(*features), output

    def _grad_cache_step(self, batch: dict) -> Tensor:
        optimizer = self.optimizers()
        optimizer.zero_grad()
        loss = grad_cache_backward(
            self.model,
            self._loss_fn(batch),
            batch["image"],
            batch["text"],
            self.hparams.grad_cache_chunks,
            self.manual_backward,
        )
        self._step_loss = loss.detach()
        optimizer.step()
        self.lr_schedulers().step_update(num_updates=self.global_step)
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        if self.automatic_optimization:
            loss, _ = self._shared_step(batch)
            self._step_loss = loss.detach()
        else:
            loss = self._grad_cache_step(batch)

        batch_size = batch["image"].shape[0]
        self.log(metrics.TRAIN_LOSS, loss, batch_size=batch_size, prog_bar=True)
        if metrics.step_is_written(self.trainer):
            self.log(metrics.TRAIN_LOGIT_SCALE, self.model.scale(), batch_size=batch_size)
            if self.model.logit_bias is not None:
                self.log(metrics.TRAIN_LOGIT_BIAS, self.model.logit_bias, batch_size=batch_size)
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            self.log(metrics.TRAIN_LR, lr, batch_size=batch_size)
        for key, name in [
            (metrics.TRAIN_SKIPPED, "skipped"),
            (metrics.TRAIN_TRUNCATED, "truncated"),
        ]:
            if name in batch:
                # summed over the epoch and the devices
                self.log(key, batch[name].float(), on_step=False, on_epoch=True, reduce_fx="sum",
                         sync_dist=True, batch_size=1)  # fmt: skip
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Lightning clips (and so checks, below) in automatic optimization only
        if not self.automatic_optimization and self._guarded():
            self._skip_if_nonfinite(optimizer)

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        # after backward and the gradient all-reduce, before the weights change
        norm = None
        if self._guarded() and self._plain_norm_clipping(
            gradient_clip_val, gradient_clip_algorithm
        ):
            # one pass over the gradients both clips them and gives the check its norm
            norm = torch.nn.utils.clip_grad_norm_(_with_grads(optimizer), gradient_clip_val)
        else:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
        if self._guarded():
            self._skip_if_nonfinite(optimizer, norm)

    def _guarded(self) -> bool:
        return bool(self.hparams.max_nonfinite_steps) and self._step_loss is not None

    def _plain_norm_clipping(self, clip_value, algorithm) -> bool:
        """Whether clipping is torch's clip_grad_norm_ on whole gradients, as Lightning does it."""
        plain_strategy = type(self.trainer.strategy) in (SingleDeviceStrategy, DDPStrategy)
        return (
            bool(clip_value)
            and algorithm in (None, "norm")
            and self.trainer.precision != "16-mixed"
            and plain_strategy
        )

    def _skip_if_nonfinite(self, optimizer: torch.optim.Optimizer, norm: Tensor | None = None):
        """Skip the optimizer step when the loss or a gradient is not finite; count it."""
        # with fp16 the gradient scaler handles overflowing gradients itself
        check_grads = self.trainer.precision != "16-mixed"
        if check_grads and norm is None:
            norm = torch.nn.utils.get_total_norm([p.grad for p in _with_grads(optimizer)])
        finite = all_finite(self._step_loss, norm if check_grads else None)

        # one host synchronisation for the decision and the values the message needs
        values = torch.stack([finite.float(), self._step_loss.float(), self.model.scale()])
        finite, loss, scale = values.tolist()
        if not check_grads:
            # the loss may differ between devices; all-reduced gradients do not
            finite = self.trainer.strategy.reduce_boolean_decision(bool(finite), all=True)

        if finite:
            self.nonfinite.good(self.global_step, loss, scale)
        else:
            # no gradients: the optimizer leaves weights and moments untouched
            optimizer.zero_grad(set_to_none=True)
            log.warning(f"step {self.global_step}: non-finite loss or gradient, step skipped")
            self.nonfinite.bad(self.global_step)
            self.log(metrics.TRAIN_NONFINITE, float(self.nonfinite.skipped_total), batch_size=1)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.model.clamp_logit_scale()

    def validation_step(self, batch: dict, batch_idx: int) -> dict[str, Tensor] | None:
        self.log(
            metrics.VAL_SKIPPED,
            batch["skipped"].float(),
            on_epoch=True,
            reduce_fx="sum",
            sync_dist=True,
            batch_size=1,
        )
        if batch["image"] is None:
            return None  # no readable image in this batch

        loss, output = self._shared_step(batch)
        image_features = output.image_features
        self.log(metrics.VAL_LOSS, loss, batch_size=batch["image"].shape[0], sync_dist=True)
        # retrieval callbacks gather these over the epoch
        return {"image_features": image_features, "index": batch["index"]}

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self._build_optimizer(parameter_groups(self.model))
        total_steps = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup_steps = min(self.hparams.warmup_steps, total_steps - 1)
        scheduler = CosineLRScheduler(
            optimizer,
            t_initial=max(total_steps - warmup_steps, 1),
            lr_min=self.hparams.min_lr,
            warmup_t=warmup_steps,
            warmup_lr_init=self.hparams.warmup_lr_init,
            warmup_prefix=True,
            t_in_epochs=False,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    def _build_optimizer(self, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        """The configured optimizer; Adam(W) uses its fused kernel unless `fused` was set.

        The fused update is one kernel for all parameters: on a CPU about four times faster
        than the default per-tensor loop, with the same arithmetic.
        """
        factory = self.optimizer
        target = factory
        if isinstance(factory, functools.partial):
            # a plain partial wraps the class; jsonargparse's passes it as the last argument
            target = factory.args[-1] if factory.args else factory.func
        unset = not isinstance(factory, functools.partial) or factory.keywords.get("fused") is None
        deepspeed = isinstance(getattr(self.trainer, "strategy", None), DeepSpeedStrategy)
        fusable = self.device.type in ("cpu", "cuda") and not deepspeed
        if target in (torch.optim.Adam, torch.optim.AdamW) and unset and fusable:
            return factory(groups, fused=True)
        return factory(groups)

    def lr_scheduler_step(self, scheduler: CosineLRScheduler, metric: Any) -> None:
        # timm schedulers are driven by the number of optimizer steps taken so far
        scheduler.step_update(num_updates=self.global_step)
