"""Checkpoint: Lightning's ModelCheckpoint whose `last.ckpt` link is replaced atomically."""

import os
import shutil

from pytorch_lightning.callbacks import ModelCheckpoint

from lightning_clip.checkpoint_io import replace_with_link


class Checkpoint(ModelCheckpoint):
    """ModelCheckpoint (every argument the same) for ``save_last: link`` runs.

    Lightning deletes `last.ckpt` before linking it to the new file, so a kill in between
    leaves no `last.ckpt`; here the new link is made beside it and renamed over it.
    """

    @staticmethod
    def _link_checkpoint(trainer, filepath: str, linkpath: str) -> None:
        if trainer.is_global_zero and os.path.abspath(filepath) != os.path.abspath(linkpath):
            if os.path.isdir(linkpath) and not os.path.islink(linkpath):
                shutil.rmtree(linkpath)
            try:
                replace_with_link(filepath, linkpath)
            except OSError:  # no symbolic links on this file system: copy instead
                shutil.copy(filepath, linkpath)
        trainer.strategy.barrier()
