"""Loading models: the one loader every command, stage, task and pipeline uses.

Checkpoints are unpickled without running code: `torch.load(weights_only=True)`, with the
classes that pyannote.audio (3.1 and 4), Lightning and this project put in checkpoints
allowed (`checkpoint_globals`) and nothing else. pyannote's own `Model.from_pretrained`
unpickles with `weights_only=False`, so that a checkpoint file can run any code it carries: `load_model`
does what it does (read the checkpoint, check pyannote's version, build the class the
checkpoint names with Lightning's `load_from_checkpoint`) with `weights_only=True`. A
checkpoint that needs any other global is refused (`UntrustedCheckpointError`), unless the
caller trusts it: `load_model(..., trusted=True)`, `trusted_checkpoints()` around any loading
(a pipeline's `Pipeline.from_pretrained`), `--trust-checkpoints` on the command line.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import os
import pickle
import re
import warnings
from collections.abc import Iterator, Mapping
from importlib import import_module
from pathlib import Path
from typing import Any

import torch
from pyannote.audio import Model
from pyannote.audio.utils.hf_hub import AssetFileName

from ..files import is_hub_name

CHECKPOINT = AssetFileName.Model.value  # "pytorch_model.bin"
TRUST_HINT = ("if you trust where it comes from, load it with --trust-checkpoints (trusted=True "
              "in Python): unpickling it can run any code it carries")

# the packages whose Model classes a checkpoint may name without trust (importing a module
# runs it)
TRUSTED_MODULES = ("pyannote.audio.", "pyannote_wavlm_prune.")
# how torch's messages start when weights_only=True met what it does not allow
WEIGHTS_ONLY_FAILURE = "Weights only load failed"

_trusted = contextvars.ContextVar("pyannote_wavlm_prune_trusted_checkpoints", default=False)


class UntrustedCheckpointError(ValueError):
    """A checkpoint that cannot be unpickled without running code it names."""


def checkpoint_globals() -> list:
    """The classes that checkpoints written by pyannote.audio 3.1 and 4 (and Lightning) and by
    this project hold, beside tensors and plain containers: what `torch.load(weights_only=True)`
    is allowed to build

    - pyannote's task specifications (the "pyannote.audio" block of every checkpoint):
      Specifications, Problem, Resolution;
    - torch's version string (TorchVersion, a `str`): pyannote.audio 3.x wrote
      `torch.__version__` in that block, so every model it saved holds one, among them the hub's
      pyannote/segmentation-3.0 and pyannote/wespeaker-voxceleb-resnet34-LM;
    - numpy arrays (`_reconstruct`, ndarray, dtype, the uint32 dtype's class): numpy's
      random state, among those a stage's resumable last.ckpt carries.
    Exactly those that the checkpoints of those writers hold, every kind of them
    (tests/test_safe_loading.py); torch allows the rest (tensors, containers). Each builds data
    only: none runs code of the checkpoint's choosing.
    """
    import numpy as np
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from torch.torch_version import TorchVersion

    try:  # numpy 2
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1
        from numpy.core.multiarray import _reconstruct
    return [Specifications, Problem, Resolution, TorchVersion, _reconstruct, np.ndarray,
            np.dtype, type(np.dtype(np.uint32))]


def checkpoints_trusted() -> bool:
    """Whether checkpoints loaded here may run code (inside `trusted_checkpoints()`)."""
    return _trusted.get()


@contextlib.contextmanager
def trusted_checkpoints(trusted: bool = True) -> Iterator[None]:
    """Inside, checkpoints load with pickle's full power (`trusted`), or not (False)

    For what loads checkpoints without a `trusted` argument: `Pipeline.from_pretrained` of a
    pipeline directory naming this package's pipeline class, `SpeakerDiarization(...)`,
    `DistillPrune(teacher=...)`. Only for files whose origin you trust: unpickling a
    checkpoint with weights_only=False can run any code it carries.
    """
    token = _trusted.set(bool(trusted))
    try:
        yield
    finally:
        _trusted.reset(token)


@contextlib.contextmanager
def unpickling(source: object, role: str = "checkpoint",
               trusted: bool | None = None) -> Iterator[bool]:
    """The `weights_only` to give `torch.load` (or Lightning) for `source`, and the context
    that makes it safe: this project's classes allowed, anything else refused in one line

    with unpickling(path, "teacher") as weights_only:
        torch.load(path, weights_only=weights_only)
    """
    if checkpoints_trusted() if trusted is None else trusted:
        yield False
        return
    allowed = checkpoint_globals()
    try:
        with torch.serialization.safe_globals(allowed):
            yield True
    except pickle.UnpicklingError as error:
        message = str(error)
        if not message.startswith(WEIGHTS_ONLY_FAILURE):
            raise  # not a pickle at all (e.g. "invalid load key"): not a question of trust
        unknown = _unknown_globals(source, message, allowed)
        if not unknown:  # torch met something else it refuses: no checkpoint torch.save wrote
            reason = " ".join(message.partition("WeightsUnpickler error:")[2]
                              .partition("Check the documentation")[0].split())
            raise ValueError(f"{_checkpoint(role, source)} could not be loaded: it holds no "
                             f"checkpoint that torch reads without running code ({reason}).") \
                from None
        raise UntrustedCheckpointError(
            f"{_checkpoint(role, source)} needs {', '.join(unknown)} to load, which is none of "
            f"the classes pyannote.audio and pyannote-wavlm-prune put in checkpoints: refused; "
            f"{TRUST_HINT}.") from None


def _unknown_globals(source: object, message: str, allowed: list) -> list[str]:
    """The globals beyond `allowed` that a checkpoint names: all of them for a file, else the
    one torch's `message` names."""
    if isinstance(source, (str, os.PathLike)):
        try:
            with torch.serialization.safe_globals(allowed):
                unknown = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(source))
            if unknown:
                return unknown
        except Exception:  # not a zip checkpoint: torch's message names what it met
            pass
    found = re.search(r"GLOBAL (\S+) was not an allowed global|whose module (\S+) is blocked",
                      message)
    return [next(name for name in found.groups() if name)] if found else []


def _checkpoint(role: str, source: object) -> str:
    """How errors name a checkpoint: "teacher checkpoint exp/model.ckpt"."""
    return f"checkpoint {source}" if role in ("", "checkpoint") else f"{role} checkpoint {source}"


def read_checkpoint(path: str | os.PathLike, role: str = "checkpoint",
                    trusted: bool | None = None, map_location: Any = "cpu") -> dict:
    """The content of a checkpoint file, unpickled without running code unless `trusted`

    Raises UntrustedCheckpointError for a checkpoint that needs classes beyond
    `checkpoint_globals()`, naming them.
    """
    with unpickling(path, role, trusted) as weights_only:
        return torch.load(path, map_location=map_location, weights_only=weights_only)


def checkpoint_file(model: str | os.PathLike | Mapping, role: str = "model") -> tuple[str, str]:
    """The local checkpoint file `model` names, downloaded from the hub for a hub name, and
    where it came from ("local" or the hub name: pyannote's telemetry origin)

    model: a checkpoint file, a directory holding pytorch_model.bin, a hub name, or what
    pyannote's `get_model` takes as a dict ({"checkpoint": ..., "subfolder": ...,
    "revision": ..., "token": ..., "cache_dir": ...}).
    """
    options = dict(model) if isinstance(model, Mapping) else {"checkpoint": model}
    checkpoint = options.get("checkpoint")
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise ValueError(f"{role}={model!r}: expected a pyannote Model or the path of its "
                         "checkpoint.")
    subfolder = options.get("subfolder") or ""
    if os.path.isfile(checkpoint):
        return os.fspath(checkpoint), "local"
    if os.path.isdir(checkpoint):
        path = Path(checkpoint) / subfolder / CHECKPOINT
        if not path.is_file():
            raise FileNotFoundError(
                f"{role} checkpoint {path} does not exist: expected a pyannote checkpoint (a "
                f"file, or a directory holding {CHECKPOINT}).")
        return str(path), "local"
    if not is_hub_name(checkpoint):
        raise FileNotFoundError(
            f"{role} checkpoint {str(checkpoint)!r} does not exist: expected a pyannote "
            f"checkpoint (a file, or a directory holding {CHECKPOINT}).")
    from pyannote.audio.utils.hf_hub import download_from_hf_hub

    try:
        path = download_from_hf_hub(str(checkpoint), AssetFileName.Model,
                                    subfolder=subfolder or None,
                                    revision=options.get("revision"),
                                    cache_dir=options.get("cache_dir"),
                                    token=options.get("token"))
    except Exception:  # offline, unknown, gated: said below
        path = None
    if path is None:
        raise ValueError(f"{role} {str(checkpoint)!r} could not be found locally nor on the "
                         "Hugging Face hub (offline?): pass the path of a checkpoint.")
    name = str(checkpoint)
    return path, name if name.lower().startswith(("pyannote/", "pyannoteai/")) else "huggingface"


def load_model(
    model: Model | str | os.PathLike | Mapping,
    role: str = "model",
    expected: type[Model] | None = None,
    strict: bool = True,
    trusted: bool | None = None,
) -> Model:
    """`model` itself, or the pyannote Model its checkpoint holds

    Parameters
    ----------
    model : Model, path, str or dict
        A pyannote Model; a checkpoint file; a directory holding `pytorch_model.bin`; a
        Hugging Face hub name ("org/name", from the local cache when offline); or a dict as
        pyannote's `get_model` takes ({"checkpoint": directory or name, "subfolder": ...}).
    role : str, optional
        What the model is for ("teacher", "segmentation", ...), named in errors.
    expected : type, optional
        The class the model must be an instance of (e.g. WavLMSegmentation).
    strict : bool, optional
        Whether every tensor of the checkpoint must load. False drops what the model does not
        have (e.g. a DistillPrune student's Lagrange multipliers).
    trusted : bool, optional
        Unpickle the checkpoint with pickle's full power (weights_only=False), which runs
        whatever code it carries: only for a file whose origin you trust. Defaults to None:
        False, unless inside `trusted_checkpoints()`.

    Raises
    ------
    FileNotFoundError
        For a local path that does not exist.
    UntrustedCheckpointError
        For a checkpoint that needs classes beyond `checkpoint_globals()` (a ValueError).
    ValueError
        For a checkpoint that is not a pyannote model, or not of class `expected`.
    """
    if not isinstance(model, Model):
        model = _load_checkpoint(model, role, strict, trusted)
    if expected is not None and not isinstance(model, expected):
        raise ValueError(f"{role} is a {type(model).__name__}: expected a {expected.__name__} "
                         "(or the path of its checkpoint).")
    return model


# what a dict given to pyannote's get_model may hold besides hyper-parameter overrides
_LOCATION_KEYS = ("checkpoint", "subfolder", "revision", "token", "cache_dir")


def _load_checkpoint(model: str | os.PathLike | Mapping, role: str, strict: bool,
                     trusted: bool | None) -> Model:
    """pyannote's `Model.from_pretrained`, with the checkpoint unpickled safely"""
    overrides = dict(model) if isinstance(model, Mapping) else {}
    for key in _LOCATION_KEYS:
        overrides.pop(key, None)
    map_location = overrides.pop("map_location", None) or _storage
    strict = overrides.pop("strict", strict)
    path, origin = checkpoint_file(model, role)
    source = path if origin == "local" else f"{path} (from {origin})"
    try:
        # storages memory-mapped: only the pickle is read, the tensors once, below
        checkpoint = _read_mapped(path, role, trusted)
        block = checkpoint["pyannote.audio"]
        from pyannote.audio.utils.dependencies import check_dependencies

        check_dependencies({"pyannote.audio": block["versions"]["pyannote.audio"]}, "Model")
        module_name, class_name = block["architecture"]["module"], block["architecture"]["class"]
    except (KeyError, TypeError) as error:
        raise ValueError(f"{role} {source} is not a pyannote checkpoint (no 'pyannote.audio' "
                         f"block naming its class: {error}).") from error
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as error:
        raise ValueError(f"{role} {source} could not be loaded as a pyannote model: "
                         f"{error}") from error
    del checkpoint
    if not (checkpoints_trusted() if trusted is None else trusted) and not (
            module_name.startswith(TRUSTED_MODULES)):
        raise UntrustedCheckpointError(
            f"{_checkpoint(role, source)} names class {module_name}.{class_name}, from neither "
            f"pyannote.audio nor pyannote-wavlm-prune: refused (importing it runs its module); "
            f"{TRUST_HINT}.")
    try:
        Klass = getattr(import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"{role} {source} names class {module_name}.{class_name}, which "
                         f"cannot be imported: {error}") from error
    if not (isinstance(Klass, type) and issubclass(Klass, Model)):
        raise ValueError(f"{role} {source} names {module_name}.{class_name}, which is not a "
                         "pyannote Model.")
    try:
        with unpickling(path, role, trusted) as weights_only:
            try:
                loaded = Klass.load_from_checkpoint(path, map_location=map_location,
                                                    strict=strict, weights_only=weights_only,
                                                    **overrides)
            except RuntimeError as error:
                if "loss_func" not in str(error):
                    raise
                # as pyannote does: a model trained with a task-dependent loss function
                warnings.warn("Model has been trained with a task-dependent loss function. "
                              "Set 'strict' to False to load the model without its loss "
                              "function and prevent this warning from appearing.", stacklevel=3)
                loaded = Klass.load_from_checkpoint(path, map_location=map_location,
                                                    strict=False, weights_only=weights_only,
                                                    **overrides)
    except UntrustedCheckpointError:
        raise
    except ValueError as error:  # the model's own checks (e.g. an ONNX graph's digest)
        message = f"{role} {source}: {error}"
        try:
            named = type(error)(message)
        except TypeError:  # a class with other arguments: a plain ValueError says it
            named = ValueError(message)
        raise named from error
    except (KeyError, TypeError, RuntimeError, OSError, pickle.UnpicklingError) as error:
        raise ValueError(f"{role} {source} could not be loaded as a pyannote model: "
                         f"{error}") from error
    # as pyannote's Model.from_pretrained (its telemetry, off unless the user enables it)
    from pyannote.audio.telemetry import track_model_init

    loaded._otel_origin = origin
    track_model_init(loaded)
    return loaded


def _read_mapped(path: str, role: str, trusted: bool | None) -> dict:
    """read_checkpoint(path) with memory-mapped storages when the file allows it."""
    with unpickling(path, role, trusted) as weights_only:
        try:
            return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
        except pickle.UnpicklingError:
            raise
        except (RuntimeError, ValueError):  # a file of torch's legacy format cannot be mapped
            with open(path, "rb") as file:
                return torch.load(io.BytesIO(file.read()), map_location="cpu",
                                  weights_only=weights_only)


def _storage(storage, location):
    """pyannote's default map_location: storages where they were saved."""
    return storage
