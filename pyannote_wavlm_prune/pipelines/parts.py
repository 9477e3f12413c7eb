"""A pipeline's parts (segmentation, embedding, PLDA) from what names them: the one resolver.

What names a part, wherever a pipeline is built, exported, imported or loaded:

- the object itself (a pyannote `Model`, a `PLDA`);
- a local path: a checkpoint file, a directory holding `pytorch_model.bin`, a PLDA directory
  holding `xvec_transform.npz` and `plda.npz`;
- what a config.yaml entry "$model/<subfolder>" stands for: pyannote expands it to
  {"checkpoint": the pipeline directory, "subfolder": <subfolder>} (`in_directory`);
- a Hugging Face hub name ("org/name"), which is not ours to check (`local_or_hub_name`).

Local paths are checked to exist before any model is loaded (`check_checkpoint_exists`,
`check_plda_exists`, and for the pipeline class `check_parts`, which also says which part a
clustering needs), with errors naming what the caller gave; models load without running code
(`models.loading.load_model`), in the runtime a pipeline names (`load_models`). Parts that
pyannote reads although a clustering needs none are stood in for (`NoPLDA`, `NoEmbedding`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pyannote.audio import Model
from pyannote.audio.core.plda import PLDA
from pyannote.audio.core.task import Problem, UnknownSpecificationsError

from ..deploy.runtime import model_for_runtime
from ..models.loading import CHECKPOINT, load_model
from .plda import PLDA_FILE, TRANSFORM_FILE, StoredPLDA

# what a config.yaml value that names a subfolder of its own directory starts with
SUBFOLDER_PREFIX = "$model/"
# the suffixes of a checkpoint file's path (which need not exist yet to be a path)
CHECKPOINT_SUFFIXES = (".bin", ".ckpt", ".pt")


def in_directory(value: Any, root: str | os.PathLike) -> Any:
    """`value` of a config.yaml, "$model/<subfolder>" resolved against the pipeline directory
    `root` as pyannote resolves it ({"checkpoint": root, "subfolder": ...}); others as they are."""
    if isinstance(value, str) and value.startswith(SUBFOLDER_PREFIX):
        return {"checkpoint": str(root), "subfolder": value[len(SUBFOLDER_PREFIX):]}
    return value


def _subfolder(reference: Mapping) -> Path:
    """The directory {"checkpoint": directory, "subfolder": ...} names."""
    return Path(reference["checkpoint"]) / (reference.get("subfolder") or "")


def local_path(reference: Any) -> Path | None:
    """The local path `reference` names, or None (an object, a hub name)

    A path that exists or is absolute; for a {"checkpoint": directory, "subfolder": ...} dict
    whose checkpoint is a local directory, that directory's subfolder.
    """
    if isinstance(reference, Mapping):
        checkpoint = reference.get("checkpoint")
        if checkpoint is None or not os.path.isdir(checkpoint):
            return None  # a hub identifier
        return _subfolder(reference)
    if isinstance(reference, (str, os.PathLike)):
        path = Path(reference)
        if path.is_absolute() or path.exists():
            return path
    return None


def local_checkpoint(model: Any) -> Path | None:
    """The local checkpoint file that `model` (what pyannote's `get_model` takes) points at,
    or None for an object or a hub name."""
    path = local_path(model)
    if path is None:
        if isinstance(model, (str, os.PathLike)) and Path(model).suffix in CHECKPOINT_SUFFIXES:
            return Path(model)
        return None
    return path / CHECKPOINT if isinstance(model, Mapping) or path.is_dir() else path


def describe(reference: Any) -> str:
    """How errors name what the caller gave: a path, or a directory and its subfolder."""
    if isinstance(reference, Mapping) and "checkpoint" in reference:
        return f"{reference['checkpoint']}, subfolder {reference.get('subfolder')!r}"
    return repr(str(reference))


def check_checkpoint_exists(role: str, model: Any) -> None:
    """Raise FileNotFoundError when `model` names a local checkpoint file that is not there."""
    path = local_checkpoint(model)
    if path is not None and not path.is_file():
        raise FileNotFoundError(
            f"{role} checkpoint {path} does not exist (from {role}={describe(model)}): "
            f"expected a pyannote checkpoint file ({CHECKPOINT})."
        )


def check_plda_exists(plda: Any) -> None:
    """Raise FileNotFoundError when `plda` names a local directory lacking a PLDA's files."""
    directory = None if isinstance(plda, PLDA) else local_path(plda)
    if directory is None:
        return
    missing = [n for n in (TRANSFORM_FILE, PLDA_FILE) if not (directory / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"PLDA directory {directory} lacks {', '.join(missing)} (from plda={describe(plda)}): "
            f"expected {TRANSFORM_FILE} and {PLDA_FILE} (see estimate_plda)."
        )


def local_or_hub_name(reference: str | os.PathLike, role: str) -> Path | str:
    """The local path `reference` names if it exists, else the hub name ("org/name") it is;
    FileNotFoundError for neither."""
    if Path(reference).exists():
        return Path(reference)
    name = os.fspath(reference)
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise FileNotFoundError(f"{role} {reference} does not exist: expected a local "
                                "pyannote checkpoint or a hub name.")
    return name


def is_pyannote_embedding(embedding: Any) -> bool:
    """Whether pyannote's `PretrainedSpeakerEmbedding(embedding)` would load a pyannote Model
    checkpoint (rather than a SpeechBrain, NeMo or ONNX WeSpeaker model): its own test."""
    if isinstance(embedding, str):
        return "pyannote" in embedding or not any(
            name in embedding for name in ("speechbrain", "nvidia", "wespeaker"))
    return isinstance(embedding, (Mapping, os.PathLike))


def get_model(model: Any, role: str, options: Mapping[str, Any]) -> Model:
    """What pyannote's `get_model(model, token, cache_dir)` returns, in eval mode, its
    checkpoint loaded without running code (`models.loading.load_model`); `options`: the
    pipeline's keyword arguments (token, cache_dir)."""
    if isinstance(model, Mapping):
        # pyannote loads a dict (what "$model/segmentation" expands to) strictly
        given = {"token": options.get("token"), "cache_dir": options.get("cache_dir"),
                 "strict": True, **model}
        return load_model(given, role).eval()
    if isinstance(model, (str, os.PathLike)):
        given = {"checkpoint": model, "token": options.get("token"),
                 "cache_dir": options.get("cache_dir")}
        return load_model(given, role, strict=False).eval()
    return load_model(model, role).eval()


def checked_model(model: Model | str | os.PathLike, role: str) -> Model:
    """`model` itself, or the pyannote Model its checkpoint (file or directory) holds, checked
    to be a segmentation model (role "segmentation") or a speaker embedding (role "embedding")
    with specifications, so that it can be saved in a pipeline directory."""
    source = f"{role} model {type(model).__name__}" if isinstance(model, Model) else f"{role} {model}"
    model = load_model(model, role, strict=False)
    try:
        problem = model.specifications.problem
    except UnknownSpecificationsError as error:
        # pyannote cannot checkpoint a model that no task has specified
        raise ValueError(
            f"{source} has no specifications, so it cannot be saved: train it with a task, or "
            "use pyannote_wavlm_prune.pipelines.embedding_training.untrained_embedding() for a "
            "random speaker embedding."
        ) from error
    if (problem == Problem.REPRESENTATION) != (role == "embedding"):
        expected = ("a speaker embedding model" if role == "embedding" else
                    "a segmentation model (e.g. a WavLMSegmentation checkpoint)")
        raise ValueError(f"{source} is a {type(model).__name__} trained for "
                         f"{problem.name.lower().replace('_', ' ')}: expected {expected}.")
    return model


def load_plda(plda: PLDA | str | os.PathLike | Mapping) -> StoredPLDA:
    """A StoredPLDA (whose arrays can be written) from a PLDA or its directory."""
    if isinstance(plda, StoredPLDA):
        return plda
    if isinstance(plda, Mapping) and plda.get("checkpoint") is not None:
        # what `$model/plda` expands to in a loaded pipeline
        return StoredPLDA.load(_subfolder(plda))
    if isinstance(plda, (str, os.PathLike)):
        return StoredPLDA.load(plda)
    raise TypeError(
        f"plda={plda!r}: expected the directory holding {TRANSFORM_FILE} and {PLDA_FILE}, "
        "or a StoredPLDA (what estimate_plda returns). A PLDA object does not keep its "
        "arrays, so it cannot be written again."
    )


class NoPLDA(PLDA):
    """Stands in for the PLDA that pyannote 4.0.7 loads even when the clustering needs none.

    pyannote's default PLDA lives in a gated hub repository; clusterings other than VBx never
    call it, so this placeholder only raises if something does.
    """

    def __init__(self):  # no files to read
        self.lda_dimension = 0

    def __call__(self, embeddings: np.ndarray):
        raise RuntimeError("This pipeline has no PLDA: VBxClustering needs plda=... (a PLDA).")


class NoEmbedding:
    """Stands in for the speaker embedding of an OracleClustering pipeline built without one.

    pyannote reads `_embedding.dimension` even when it has no embedding to compute (to shape
    an empty output); OracleClustering needs no embedding, so this one has dimension 0.
    """

    dimension = 0


def check_parts(clustering: str, segmentation: Any, embedding: Any, plda: Any) -> Any:
    """`plda`, or a `NoPLDA` where the clustering needs none; before any part is loaded, an
    error for a local checkpoint or PLDA directory that is not there, and for a part that
    `clustering` needs but was not given (an embedding; VBx's PLDA)."""
    check_checkpoint_exists("segmentation", segmentation)
    if embedding is None:
        if clustering != "OracleClustering":
            raise ValueError(
                f"clustering={clustering!r} needs embedding=... (a speaker embedding Model "
                "or checkpoint); only OracleClustering runs without one."
            )
    else:
        check_checkpoint_exists("embedding", embedding)
    if plda is None:
        if clustering == "VBxClustering":
            raise ValueError(
                "clustering='VBxClustering' needs plda=... (a PLDA or its directory, "
                "see pyannote_wavlm_prune.pipelines.estimate_plda)."
            )
        return NoPLDA()
    check_plda_exists(plda)
    return plda


def load_models(segmentation: Any, embedding: Any, segmentation_runtime: str | None,
                embedding_runtime: str | None, options: Mapping[str, Any]) -> tuple[Model, Any, Any]:
    """(the segmentation model as its checkpoint holds it, what `save_pipeline` writes; the
    one run, in `segmentation_runtime`; the embedding, a Model in `embedding_runtime` when it
    is a pyannote checkpoint, else as given for pyannote's wrapper to load); `options`: the
    pipeline's keyword arguments (token, cache_dir)."""
    source = get_model(segmentation, "segmentation", options)
    segmentation = model_for_runtime("segmentation", source, segmentation_runtime)
    if embedding is not None and (embedding_runtime is not None
                                  or is_pyannote_embedding(embedding)):
        # loaded here, safely, rather than by pyannote's embedding wrapper
        embedding = get_model(embedding, "embedding", options)
        if embedding_runtime is not None:
            embedding = model_for_runtime("embedding", embedding, embedding_runtime)
    return source, segmentation, embedding
