"""`--resume auto`: find the newest complete checkpoint of a run, to continue it."""

import zipfile
from pathlib import Path


def is_complete_checkpoint(path: Path) -> bool:
    """A torch.save zip archive whose central directory and pickle are present.

    The central directory is written last, so a file cut short by a crash fails here; the
    atomic writer never leaves such a file under a `.ckpt` name, but other tools might.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/data.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def run_checkpoints(folders: list[Path]) -> list[Path]:
    """Every `*.ckpt` under the folders (links resolved, each file once), newest first."""
    found = {}
    for folder in folders:
        for path in folder.rglob("*.ckpt") if folder.is_dir() else []:
            target = path.resolve()
            if target.is_file():
                found.setdefault(target, path)
    return sorted(found, key=lambda target: target.stat().st_mtime_ns, reverse=True)


def newest_checkpoint(folders: list[Path]) -> Path | None:
    """The newest complete checkpoint under the folders, or None."""
    return next((path for path in run_checkpoints(folders) if is_complete_checkpoint(path)), None)


def version_of(checkpoint: Path, logs_dir: Path) -> str | None:
    """The logger version folder (e.g. `version_3`) a checkpoint belongs to, if any."""
    try:
        relative = checkpoint.resolve().relative_to(logs_dir.resolve())
    except ValueError:
        return None
    return relative.parts[0] if len(relative.parts) > 1 else None
