"""RetrievalEval: image<->text recall@K on the validation captions, every validation."""

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from torch import Tensor

from lightning_clip import metrics
from lightning_clip.distributed import gather_objects, split_across_ranks


def recall_over_gallery(
    pl_module: LightningModule,
    gallery: dict[int, Tensor],
    captions: list[str],
    caption_image: list[int],
    text_batch_size: int = 256,
    ks: tuple[int, ...] = metrics.RECALL_KS,
) -> dict[str, float]:
    """Recall@K for image features keyed by image index and all captions of those images.

    Captions whose image is not in the gallery (it could not be read) are left out: there
    is nothing for them to retrieve.
    """
    image_ids = sorted(gallery)
    image_features = torch.stack([gallery[index] for index in image_ids])
    position = {index: row for row, index in enumerate(image_ids)}
    kept = [i for i, index in enumerate(caption_image) if index in position]

    # the captions are split across devices, and each device gets every feature back
    encode = split_across_ranks(lambda texts: pl_module.encode_captions(texts, text_batch_size))
    text_features = encode([captions[i] for i in kept])
    text_image = torch.tensor([position[caption_image[i]] for i in kept])
    return metrics.retrieval_metrics(image_features, text_features.cpu(), text_image, ks)


class RetrievalEval(Callback):
    """Recall@K both ways over the whole validation gallery, with every caption of an image.

    Image features come from the validation steps of all devices; each image counts once even
    when a distributed sampler repeated it to even out the shards.
    """

    def __init__(self, ks: tuple[int, ...] = metrics.RECALL_KS, text_batch_size: int = 256):
        """
        Args:
            ks: The K values of recall@K.
            text_batch_size: Captions encoded per forward pass.
        """
        super().__init__()
        self.ks = tuple(ks)
        self.text_batch_size = text_batch_size
        self._features: list[Tensor] = []
        self._indices: list[Tensor] = []

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._features, self._indices = [], []

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if dataloader_idx == 0 and outputs is not None:
            self._features.append(outputs["image_features"].detach().float().cpu())
            self._indices.append(outputs["index"].detach().cpu())

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not self._features:
            return
        captions, caption_image = trainer.datamodule.val_captions

        # one feature per image index, whichever device saw it first
        local = (torch.cat(self._features), torch.cat(self._indices))
        gallery: dict[int, Tensor] = {}
        for features, indices in gather_objects(local):
            for feature, index in zip(features, indices.tolist(), strict=True):
                gallery.setdefault(index, feature)

        results = recall_over_gallery(
            pl_module, gallery, captions, caption_image, self.text_batch_size, self.ks
        )
        num_images = len(gallery)
        for key, value in results.items():
            # equal on every rank (computed from the gathered gallery); syncing is a no-op
            pl_module.log(key, value, batch_size=num_images, sync_dist=True)
