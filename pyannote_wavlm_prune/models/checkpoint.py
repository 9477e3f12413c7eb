"""Saving models as standard pyannote checkpoints, without a Lightning trainer."""

from __future__ import annotations

import os
from pathlib import Path

import lightning
import torch
from pyannote.audio import Model

from ..files import write_atomically


def save_checkpoint(model: Model, path: str | os.PathLike) -> Path:
    """Write `model` as a pyannote checkpoint that `Model.from_pretrained(path)` reloads.

    The file is written next to its destination and renamed into place, so an interrupted
    save never leaves a truncated checkpoint behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    # adds the "pyannote.audio" block (module and class of the model, task specifications)
    model.on_save_checkpoint(checkpoint)
    return save_atomically(checkpoint, path)


def save_atomically(obj, path: str | os.PathLike) -> Path:
    """`torch.save(obj, path)`, written next to `path` then renamed into place (umask modes)."""
    return write_atomically(path, lambda file: torch.save(obj, file))
