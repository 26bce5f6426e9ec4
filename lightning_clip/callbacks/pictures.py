"""Pictures: what the model does, drawn into TensorBoard at every validation.

- `pictures/similarity`: a heatmap of one validation batch's image-caption similarities
  (a bright diagonal means matching pairs are found);
- `pictures/retrieval`: validation images with the captions the model ranks first among all
  validation captions, a right caption marked with a check;
- `pictures/zeroshot_<name>`: the zero-shot confusion matrix of the first `ZeroShotEval`;
- optionally (`projector_size`), validation images and their captions in TensorBoard's
  Projector tab: one shared embedding space, each point labelled image or caption.
"""

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only

from lightning_clip.callbacks.zeroshot import ZeroShotEval


def _writer(trainer: Trainer):
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def _show(pixels: torch.Tensor, data_config: dict) -> torch.Tensor:
    """(3, H, W) normalised -> (H, W, 3) in [0, 1] for display."""
    mean = torch.tensor(data_config["mean"]).view(3, 1, 1)
    std = torch.tensor(data_config["std"]).view(3, 1, 1)
    return (pixels.cpu() * std + mean).clamp(0, 1).permute(1, 2, 0)


class Pictures(Callback):
    """Draws the similarity heatmap, retrieval examples and zero-shot confusion matrix."""

    def __init__(
        self,
        num_images: int = 6,
        top_k: int = 3,
        every_n_epochs: int = 1,
        projector_size: int = 0,
    ):
        """
        Args:
            num_images: Validation images shown with their retrieved captions (and the size
                of the similarity heatmap).
            top_k: Captions shown per image.
            every_n_epochs: Draw at every n-th validation.
            projector_size: Validation images written with their first caption to the
                Projector tab (0: none). Each drawing stores their features and thumbnails.
        """
        super().__init__()
        self.num_images = num_images
        self.top_k = top_k
        self.every_n_epochs = every_n_epochs
        self.projector_size = projector_size
        self._batch = None
        self._projected: list[dict] = []

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._projected = []

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if dataloader_idx != 0 or batch["image"] is None:
            return
        if batch_idx == 0:
            self._batch = {key: batch[key][: self.num_images] for key in ("image", "text", "index")}
        wanted = self.projector_size - sum(len(part["index"]) for part in self._projected)
        if wanted > 0:
            self._projected.append(
                {
                    "image_features": outputs["image_features"][:wanted].float().cpu(),
                    "image": batch["image"][:wanted].cpu(),
                    "index": batch["index"][:wanted].cpu(),
                }
            )

    @rank_zero_only
    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer = _writer(trainer)
        if writer is None or trainer.sanity_checking or self._batch is None:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        step = trainer.global_step
        writer.add_figure("pictures/similarity", self._similarity(pl_module), step)
        writer.add_figure("pictures/retrieval", self._retrieval(trainer, pl_module), step)
        zeroshot = next((c for c in trainer.callbacks if isinstance(c, ZeroShotEval)), None)
        if zeroshot is not None and zeroshot.confusion is not None:
            figure = self._confusion(zeroshot.confusion, zeroshot.class_names)
            writer.add_figure(f"pictures/zeroshot_{zeroshot.name}", figure, step)
        if self._projected:
            self._project(writer, trainer, pl_module, step)

    def _project(self, writer, trainer: Trainer, pl_module: LightningModule, step: int) -> None:
        """Images and one caption each in one embedding space, for the Projector tab."""
        captions, caption_image = trainer.datamodule.val_captions
        first_caption = {}
        for caption, index in zip(captions, caption_image, strict=True):
            first_caption.setdefault(index, caption)

        indices = torch.cat([part["index"] for part in self._projected]).tolist()
        image_features = torch.cat([part["image_features"] for part in self._projected])
        texts = [first_caption[index] for index in indices]
        text_features = pl_module.encode_captions(texts).cpu()

        pixels = torch.cat([part["image"] for part in self._projected])
        shown = torch.stack([_show(p, pl_module.image_data_config) for p in pixels])
        thumbnails = F.interpolate(shown.permute(0, 3, 1, 2), size=(32, 32), mode="area")
        # a caption's point shows its image too, so a caption far from its image stands out
        writer.add_embedding(
            torch.cat([image_features, text_features]),
            metadata=[["image", text] for text in texts] + [["caption", text] for text in texts],
            metadata_header=["kind", "caption"],
            label_img=torch.cat([thumbnails, thumbnails]),
            global_step=step,
            tag="validation",
        )

    def _similarity(self, pl_module: LightningModule):
        images = pl_module.model.encode_image(self._batch["image"])
        texts = pl_module.model.encode_text(self._batch["text"])
        similarity = (images @ texts.T).float().cpu()  # (B, B)
        # Figure objects draw off-screen without touching pyplot's global state
        figure = Figure(figsize=(4, 4))
        axes = figure.subplots()
        # the colour range follows the values, so a faint diagonal still stands out
        shown = axes.imshow(similarity, cmap="viridis")
        axes.set_xlabel("caption")
        axes.set_ylabel("image")
        figure.colorbar(shown, ax=axes)
        return figure

    def _retrieval(self, trainer: Trainer, pl_module: LightningModule):
        captions, caption_image = trainer.datamodule.val_captions
        text_features = pl_module.encode_captions(captions)
        image_features = pl_module.model.encode_image(self._batch["image"]).float()
        top = (image_features @ text_features.T).topk(self.top_k, dim=1).indices.cpu()

        count = len(self._batch["index"])
        figure = Figure(figsize=(3 * count, 3.6))
        axes = figure.subplots(1, count, squeeze=False)
        for column, (axis, index) in enumerate(zip(axes[0], self._batch["index"], strict=True)):
            axis.imshow(_show(self._batch["image"][column], pl_module.image_data_config))
            axis.axis("off")
            lines = [
                ("\u2713 " if caption_image[i] == int(index) else "  ") + captions[i][:40]
                for i in top[column].tolist()
            ]
            axis.set_title("\n".join(lines), fontsize=7, loc="left")
        figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.78, wspace=0.1)
        return figure

    @staticmethod
    def _confusion(confusion: torch.Tensor, class_names: list):
        names = [name if isinstance(name, str) else name[0] for name in class_names]
        figure = Figure(figsize=(5, 5))
        axes = figure.subplots()
        axes.imshow(confusion.cpu(), cmap="Blues")
        if len(names) <= 30:
            axes.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
            axes.set_yticks(range(len(names)), names, fontsize=7)
        axes.set_xlabel("predicted")
        axes.set_ylabel("true")
        figure.tight_layout()
        return figure
