"""Diarization pipelines as self-contained directories that `Pipeline.from_pretrained` loads.

Layout of an exported directory::

    config.yaml                   pipeline class, its arguments, tuned hyper-parameters
    segmentation/pytorch_model.bin
    embedding/pytorch_model.bin   (unless OracleClustering without embedding)
    plda/xvec_transform.npz       (VBxClustering only)
    plda/plda.npz

config.yaml names its parts "$model/<subfolder>", which pyannote resolves against the
directory of config.yaml, so the directory loads from any working directory and can be
moved or copied whole.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyannote.audio
import yaml
from pyannote.audio import Model, Pipeline
from pyannote.audio.utils.hf_hub import AssetFileName

from .. import __version__
from ..deploy.embedding import check_embedding_runtime, check_onnx_embedding, torch_embedding
from ..deploy.runtime import check_runtime, segmentation_for_runtime
from ..files import (
    check_output_location,
    check_writable,
    give_default_modes,
    is_empty_directory,
    place_directory,
    writing,
)
from ..models.checkpoint import save_checkpoint
from ..models.loading import (
    TRUST_HINT,
    UntrustedCheckpointError,
    checkpoints_trusted,
    trusted_checkpoints,
)
from ..settings import DIARIZATION_OPTIONS, check_config, check_hyper_parameters, check_settings
from .embedding_training import untrained_embedding
from .parts import CHECKPOINT, checked_model, in_directory, load_plda
from .plda import PLDA_FILE, TRANSFORM_FILE, StoredPLDA
from .speaker_diarization import EMBEDDING_BATCH_SIZE, SEGMENTATION_BATCH_SIZE, SpeakerDiarization

# the class config.yaml names: a public interface, never move it without a shim
PIPELINE_CLASS = "pyannote_wavlm_prune.pipelines.SpeakerDiarization"
PACKAGE = "pyannote-wavlm-prune"
CONFIG = AssetFileName.Pipeline.value


def check_target(directory: str | os.PathLike, overwrite: bool = False,
                 inputs: Iterable[tuple[str, object]] = ()) -> None:
    """Raise unless a pipeline may be written to `directory`

    It must not be, or contain, the working directory or one of `inputs` ((what, path) pairs);
    it must be new or empty, or, with `overwrite`, a pipeline directory (`check_replaceable`);
    its place must be writable (`files.check_writable`).
    """
    check_output_location(directory, inputs)
    directory = Path(directory)
    if os.path.lexists(directory) and not is_empty_directory(directory):
        if not overwrite:
            raise FileExistsError(
                f"{directory} exists and is not empty: expected a new or empty directory "
                "(or overwrite=True)."
            )
        check_replaceable(directory)
    check_writable(directory)  # before the models are loaded and written


def check_replaceable(directory: str | os.PathLike) -> None:
    """Raise unless `directory` is a pipeline directory as `export_pipeline` writes it

    What `overwrite` may replace: config.yaml naming this package's pipeline, and nothing
    but the parts it names (segmentation/, embedding/, plda/).
    """
    directory = Path(directory)
    layout = {CONFIG, "segmentation", f"segmentation/{CHECKPOINT}", "embedding",
              f"embedding/{CHECKPOINT}", "plda", f"plda/{TRANSFORM_FILE}", f"plda/{PLDA_FILE}"}
    found = {path.relative_to(directory).as_posix() for path in directory.rglob("*")}
    reasons = [f"it holds {', '.join(sorted(found - layout)[:5])}"] if found - layout else []
    try:
        with open(directory / CONFIG) as file:
            name = (yaml.safe_load(file) or {}).get("pipeline", {}).get("name")
    except (OSError, yaml.YAMLError, AttributeError):
        name = None
    if name != PIPELINE_CLASS:
        reasons.append(f"its {CONFIG} does not name {PIPELINE_CLASS}")
    if reasons:
        raise FileExistsError(
            f"{directory} is not a pipeline directory written by {PACKAGE} ({'; '.join(reasons)}): "
            "overwrite replaces only those. Expected a new directory, or one export wrote.")


def export_pipeline(
    directory: str | os.PathLike,
    segmentation: Model | str | os.PathLike,
    embedding: Model | str | os.PathLike | None = None,
    plda: StoredPLDA | str | os.PathLike | None = None,
    clustering: str = "AgglomerativeClustering",
    params: Mapping[str, Any] | None = None,
    *,
    segmentation_step: float = 0.1,
    embedding_exclude_overlap: bool = False,
    segmentation_batch_size: int = SEGMENTATION_BATCH_SIZE,
    embedding_batch_size: int = EMBEDDING_BATCH_SIZE,
    der_variant: Mapping[str, Any] | None = None,
    segmentation_runtime: str | None = None,
    embedding_runtime: str | None = None,
    extra: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    embedding_name: str | None = None,
    diarization_options: Mapping[str, Any] | None = None,
    chunkwise_embeddings: bool | None = None,
) -> Path:
    """Write a diarization pipeline directory that `Pipeline.from_pretrained` loads offline

    Parameters
    ----------
    directory : path
        Where to write. Must not exist, be empty, or `overwrite` must be True.
    segmentation : Model or path
        Segmentation model, or its checkpoint (file, or directory with pytorch_model.bin).
    embedding : Model or path, optional
        Speaker embedding model or checkpoint. Required by every clustering but
        OracleClustering.
    plda : StoredPLDA or path, optional
        PLDA (from `estimate_plda`) or the directory holding its two .npz files. Required
        by VBxClustering, ignored otherwise.
    clustering : str, optional
        AgglomerativeClustering (default), KMeansClustering, VBxClustering or
        OracleClustering.
    params : dict, optional
        Pipeline hyper-parameters ({"segmentation": {...}, "clustering": {...}}), checked
        by instantiating the pipeline. Defaults to `SpeakerDiarization.default_parameters()`.
    segmentation_step, embedding_exclude_overlap, segmentation_batch_size,
    embedding_batch_size, der_variant : optional
        Arguments of `SpeakerDiarization`, saved in config.yaml.
    segmentation_runtime : str, optional
        "torch", "torch-int8", "onnxruntime" or "onnxruntime-int8", saved in config.yaml.
        For the ONNX Runtime ones, the segmentation model is exported to ONNX now (checked
        against the torch model) and segmentation/pytorch_model.bin holds the graph (an
        `OnnxSegmentation` checkpoint); torch ones keep the fp32 checkpoint and quantise at
        load. Defaults to None: the checkpoint as it is.
    embedding_runtime : str, optional
        "torch", "onnxruntime" or "onnxruntime-int8" (see
        `pyannote_wavlm_prune.deploy.embedding.EMBEDDING_RUNTIMES`), saved in config.yaml.
        embedding/pytorch_model.bin stays the torch checkpoint: the ONNX Runtime ones export
        the embedding's ResNet trunk when the pipeline loads (checked against torch). Only
        checked here that the embedding has such a trunk. Defaults to None: the embedding
        model as it is.
    extra : dict, optional
        Additional top-level entries of config.yaml (e.g. "optimization": {...}).
    overwrite : bool, optional
        Replace an existing pipeline directory (one this function wrote, nothing else).
        Defaults to False.
    embedding_name : str, optional
        Instead of `embedding`: a Hugging Face model name (e.g.
        "pyannote/wespeaker-voxceleb-resnet34-LM") that config.yaml names as it is. Nothing
        is downloaded or copied (the pipeline then loads it from the hub or its cache); the
        hyper-parameters are checked with a stand-in embedding.
    diarization_options : dict, optional
        Options of `SpeakerDiarization` beyond pyannote's (`speaker_diarization.PIPELINE_OPTIONS`:
        median_filter, min_clean_ratio, ..., e.g. DiariZen's), saved in config.yaml.
        Defaults to None: pyannote 4's behaviour.
    chunkwise_embeddings : bool, optional
        Argument of `SpeakerDiarization`, saved in config.yaml unless None (the default).

    Every setting is checked against `settings.SETTINGS` before anything is loaded.

    Returns
    -------
    directory : Path
        The written directory.

    Notes
    -----
    Everything is written into a temporary directory beside `directory`, then renamed into
    place (`files.place_directory`): an interrupted export leaves no half-written pipeline,
    and of two exports to one new directory at once, one fails. `directory` may not be, or
    contain, the working directory or an input; `overwrite` replaces only a directory that
    `export_pipeline` wrote (see `check_replaceable`).
    """
    directory = Path(directory).absolute()
    # now, rather than after loading the models
    check_target(directory, overwrite, [("segmentation", segmentation), ("embedding", embedding),
                                        ("plda", plda)])
    # the settings, as config.yaml will hold them, checked before any model is loaded
    settings = check_settings({
        "clustering": clustering, "segmentation_step": segmentation_step,
        "embedding_exclude_overlap": embedding_exclude_overlap,
        "segmentation_batch_size": segmentation_batch_size,
        "embedding_batch_size": embedding_batch_size,
        "der_variant": None if der_variant is None else dict(der_variant),
        "segmentation_runtime": segmentation_runtime, "embedding_runtime": embedding_runtime,
        "chunkwise_embeddings": chunkwise_embeddings,
        **_plain(dict(diarization_options or {}))}, "export_pipeline")
    others = sorted(set(diarization_options or {}) - set(DIARIZATION_OPTIONS))
    if others:
        raise ValueError(f"diarization_options has keys {others}: expected some of "
                         f"{list(DIARIZATION_OPTIONS)} (the others are arguments of their own).")
    if params is not None:
        check_hyper_parameters(_plain(params), "export_pipeline", prefix="params.")

    if embedding_name is not None and embedding is not None:
        raise ValueError("Give embedding= (a model or checkpoint, copied into the directory) or "
                         "embedding_name= (a hub name, written as is), not both.")
    check_runtime(segmentation_runtime)
    check_embedding_runtime(embedding_runtime)
    segmentation_model = checked_model(segmentation, "segmentation")
    if segmentation_runtime is not None and segmentation_runtime.startswith("onnxruntime"):
        # exported once here rather than at every load
        segmentation_model = segmentation_for_runtime(segmentation_model, segmentation_runtime)
    embedding_model = None if embedding is None else checked_model(embedding, "embedding")
    if embedding_model is not None:
        # the torch model (one a pipeline ran with ONNX Runtime saves as the torch model)
        embedding_model = torch_embedding(embedding_model)
        if embedding_runtime is not None and embedding_runtime.startswith("onnxruntime"):
            # now rather than when the pipeline loads; the export itself waits for the load
            check_onnx_embedding(embedding_model, embedding_runtime)
    stored_plda = None
    if clustering == "VBxClustering":
        if plda is None:
            raise ValueError("clustering='VBxClustering' needs plda=... (see estimate_plda).")
        stored_plda = load_plda(plda)

    # building the pipeline in memory checks models, clustering and params before writing
    options = {name: value for name, value in settings.items()
               if name not in ("clustering", "segmentation_runtime", "embedding_runtime")}
    # a named embedding is checked without the hub, by a stand-in: the pipeline loads it
    validation_embedding = embedding_model if embedding_name is None else untrained_embedding()
    pipeline = SpeakerDiarization(segmentation=segmentation_model, embedding=validation_embedding,
                                  plda=stored_plda, clustering=clustering, **options)
    # not given to the pipeline above: "torch" would fold the caller's model in place, and
    # an ONNX embedding runtime would export the embedding's trunk for nothing
    options["segmentation_runtime"] = segmentation_runtime
    options["embedding_runtime"] = embedding_runtime
    params = pipeline.default_parameters() if params is None else _plain(params)
    pipeline.instantiate(params)
    if not pipeline.instantiated:
        raise ValueError(
            f"params={params} leave {_missing_parameters(pipeline)} unset: expected values "
            f"for every hyper-parameter of {clustering}."
        )

    pipeline_params: dict[str, Any] = {
        "clustering": clustering,
        "segmentation": "$model/segmentation",
    }
    if embedding_model is not None:
        pipeline_params["embedding"] = "$model/embedding"
    elif embedding_name is not None:
        pipeline_params["embedding"] = str(embedding_name)
    if stored_plda is not None:
        pipeline_params["plda"] = "$model/plda"
    pipeline_params.update({k: v for k, v in options.items() if v is not None})
    config: dict[str, Any] = {
        "dependencies": {"pyannote.audio": pyannote.audio.__version__, PACKAGE: __version__},
        "pipeline": {"name": PIPELINE_CLASS, "params": pipeline_params},
        "params": params,
    }
    if extra:
        config.update(_plain(extra))

    with writing(directory):  # a full disk or a read-only place, said as such
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(
            tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".tmp")
        )
        try:
            save_checkpoint(segmentation_model, staging / "segmentation" / CHECKPOINT)
            if embedding_model is not None:
                save_checkpoint(embedding_model, staging / "embedding" / CHECKPOINT)
            if stored_plda is not None:
                stored_plda.save(staging / "plda")
            with open(staging / CONFIG, "w") as file:
                yaml.safe_dump(config, file, sort_keys=False)
            give_default_modes(staging)
            place_directory(staging, directory, overwrite=overwrite, replaceable=check_replaceable)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return directory


def save_pipeline(
    pipeline: SpeakerDiarization,
    directory: str | os.PathLike,
    params: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Export a SpeakerDiarization pipeline object (e.g. after tuning) as a directory

    Parameters
    ----------
    pipeline : SpeakerDiarization
        Pipeline of this package (built in memory or loaded with `Pipeline.from_pretrained`).
    directory : path
        Where to write (see `export_pipeline`).
    params : dict, optional
        Hyper-parameters. Defaults to the pipeline's instantiated ones.
    extra : dict, optional
        Additional top-level entries of config.yaml.
    overwrite : bool, optional
        Replace a non-empty `directory`. Defaults to False.
    """
    if not isinstance(pipeline, SpeakerDiarization):
        raise TypeError(
            f"pipeline is a {type(pipeline).__name__}: expected {PIPELINE_CLASS} (pyannote's "
            "own pipeline cannot be written offline: its PLDA and models come from the hub)."
        )
    if params is None:
        if not pipeline.instantiated:
            raise ValueError("pipeline is not instantiated: give params=... or instantiate it.")
        params = pipeline.parameters(instantiated=True)
    embedding = getattr(pipeline._embedding, "model_", None)
    plda = pipeline.plda if pipeline.klustering == "VBxClustering" else None
    if isinstance(pipeline._plda, StoredPLDA) and plda is not None:
        plda = pipeline._plda
    # the model as its checkpoint held it (a torch-int8 pipeline runs a copy that cannot be
    # saved as a pyannote checkpoint)
    segmentation = getattr(pipeline, "segmentation_source", None) or pipeline._segmentation.model
    # every setting of the one table, as the pipeline holds it
    settings = {name: value for name, value in pipeline.settings.items()
                if name not in DIARIZATION_OPTIONS}
    return export_pipeline(directory, segmentation=segmentation, embedding=embedding, plda=plda,
                           params=params, extra=extra, overwrite=overwrite,
                           diarization_options=pipeline.diarization_options, **settings)


def read_pipeline_config(directory: str | os.PathLike) -> dict:
    """The content of a pipeline directory's config.yaml (clear error when there is none)."""
    path = Path(directory)
    config_file = path if path.is_file() else path / CONFIG
    if not config_file.is_file():
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: expected a pipeline directory.")
        raise FileNotFoundError(
            f"{path} has no {CONFIG}: expected a pipeline directory (see export_pipeline)."
        )
    try:
        with open(config_file) as file:
            config = yaml.safe_load(file)
    except yaml.YAMLError as error:
        raise ValueError(f"{config_file} is not valid YAML ({' '.join(str(error).split())}): "
                         "expected a pipeline's config.yaml, as export writes it.") from None
    if not isinstance(config, dict) or not isinstance(config.get("pipeline"), dict) \
            or "name" not in config["pipeline"]:
        raise ValueError(
            f"{config_file} does not describe a pipeline: expected a 'pipeline: name:' entry."
        )
    return config


def load_pipeline(directory: str | os.PathLike, trusted: bool | None = None,
                  **overrides: Any) -> SpeakerDiarization:
    """Load a pipeline directory, optionally overriding arguments of its pipeline class

    `load_pipeline(d)` is `Pipeline.from_pretrained(d)` with clear errors for a missing
    config.yaml, and safe: config.yaml must name this package's pipeline class (pyannote
    builds whatever class it names), whose checkpoints load without running code (see
    `models.loading`). `trusted=True` lifts both (only for a directory whose origin you
    trust); None (default): as `models.loading.trusted_checkpoints()` says, False outside it.
    Overrides replace entries of config.yaml's `pipeline: params:`, e.g.
    `clustering="OracleClustering"` to score the segmentation alone (the embedding, PLDA and
    clustering hyper-parameters are then dropped), or `segmentation_step=0.5`.
    """
    path = Path(directory)
    config = read_pipeline_config(path)
    root = (path.parent if path.is_file() else path).absolute()
    config_file = path if path.is_file() else path / CONFIG
    if not (checkpoints_trusted() if trusted is None else trusted):
        _check_pipeline_class(config, config_file)
    if config["pipeline"]["name"] == PIPELINE_CLASS:
        # every value of config.yaml (and every override) checked here, naming the file
        check_config(config, str(config_file))
        check_settings({**config["pipeline"]["params"], **overrides}, str(config_file))
    with contextlib.nullcontext() if trusted is None else trusted_checkpoints(trusted):
        if not overrides:
            return Pipeline.from_pretrained(path)

        # a config given as a dict resolves "$model/..." against the working directory
        # (trap): resolve them against the pipeline directory here instead
        arguments = dict(config["pipeline"].get("params", {}))
        arguments.update(overrides)
        params = dict(config.get("params", {}))
        if arguments.get("clustering") == "OracleClustering":
            for name in ("embedding", "plda"):
                if name not in overrides:
                    arguments.pop(name, None)
            params.pop("clustering", None)
        arguments = {key: in_directory(value, root) for key, value in arguments.items()}
        config = {**config, "pipeline": {**config["pipeline"], "params": arguments},
                  "params": params}
        return Pipeline.from_pretrained(config)


def _check_pipeline_class(config: Mapping[str, Any], config_file: Path) -> None:
    """Raise UntrustedCheckpointError unless `config` builds nothing but this package's
    pipeline: pyannote's `Pipeline.from_pretrained` calls whatever class config.yaml names
    with the arguments it gives, and its preprocessors too (classes, or database.yml files
    that pyannote.database reads). export_pipeline writes no preprocessors."""
    name = config["pipeline"]["name"]
    named = [f"names pipeline class {name}"] if name != PIPELINE_CLASS else []
    if config.get("preprocessors"):
        named.append(f"has preprocessors ({', '.join(map(str, config['preprocessors']))})")
    if named:
        raise UntrustedCheckpointError(
            f"{config_file} {' and '.join(named)}: refused, as pyannote builds what a config "
            f"names (expected {PIPELINE_CLASS} alone, whose checkpoints load without running "
            f"code); {TRUST_HINT}.")


def _missing_parameters(pipeline) -> list[str]:
    every = set(pipeline._flatten(pipeline.parameters()))
    given = set(pipeline._flatten(pipeline.parameters(instantiated=True)))
    return sorted(every - given)


def _plain(value: Any) -> Any:
    """`value` made of plain dicts, lists, str, int, float, bool (safe for yaml.safe_dump)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, os.PathLike):
        return str(value)
    raise TypeError(f"{value!r} of type {type(value).__name__} cannot be written to config.yaml.")
