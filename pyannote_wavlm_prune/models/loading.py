"""Loading models: the one loader every command, stage, task and pipeline uses."""

from __future__ import annotations

import os
from pathlib import Path

from pyannote.audio import Model
from pyannote.audio.utils.hf_hub import AssetFileName

from ..files import is_hub_name

CHECKPOINT = AssetFileName.Model.value  # "pytorch_model.bin"


def load_model(
    model: Model | str | os.PathLike,
    role: str = "model",
    expected: type[Model] | None = None,
    strict: bool = True,
) -> Model:
    """`model` itself, or the pyannote Model its checkpoint holds

    Parameters
    ----------
    model : Model, path or str
        A pyannote Model; a checkpoint file; a directory holding `pytorch_model.bin`; or a
        Hugging Face hub name ("org/name", from the local cache when offline).
    role : str, optional
        What the model is for ("teacher", "segmentation", ...), named in errors.
    expected : type, optional
        The class the model must be an instance of (e.g. WavLMSegmentation).
    strict : bool, optional
        Whether every tensor of the checkpoint must load. False drops what the model does not
        have (e.g. a DistillPrune student's Lagrange multipliers).

    Raises
    ------
    FileNotFoundError
        For a local path that does not exist.
    ValueError
        For a checkpoint that is not a pyannote model, or not of class `expected`.
    """
    if not isinstance(model, Model):
        if not isinstance(model, (str, os.PathLike)):
            raise ValueError(f"{role}={model!r}: expected a pyannote Model or the path of its "
                             "checkpoint.")
        path = Path(model)
        hub_name = is_hub_name(model)
        if not hub_name:
            if path.is_dir():
                path = path / CHECKPOINT
            if not path.is_file():
                raise FileNotFoundError(
                    f"{role} checkpoint {str(model)!r} does not exist: expected a pyannote "
                    f"checkpoint (a file, or a directory holding {CHECKPOINT}).")
        try:
            loaded = Model.from_pretrained(path if not hub_name else model, strict=strict)
        except (KeyError, TypeError, RuntimeError, OSError) as error:
            raise ValueError(f"{role} {str(model)!r} could not be loaded as a pyannote model: "
                             f"{error}") from error
        if loaded is None:  # pyannote returns None for a hub name it cannot resolve
            raise ValueError(f"{role} {str(model)!r} could not be found locally nor on the "
                             "Hugging Face hub (offline?): pass the path of a checkpoint.")
        model = loaded
    if expected is not None and not isinstance(model, expected):
        raise ValueError(f"{role} is a {type(model).__name__}: expected a {expected.__name__} "
                         "(or the path of its checkpoint).")
    return model
