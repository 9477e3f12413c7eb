"""Hyper-parameter optimization of a diarization pipeline on a protocol's development set."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from optuna.samplers import TPESampler
from pyannote.pipeline import Optimizer
from tqdm.auto import tqdm

from .export import check_target, load_pipeline, save_pipeline
from .speaker_diarization import SpeakerDiarization


@dataclass
class OptimizationResult:
    """Best hyper-parameters found, their loss (DER on the tuning files) and where saved."""

    params: dict
    loss: float
    num_trials: int
    directory: Path | None


def optimize_pipeline(
    pipeline: SpeakerDiarization | str | os.PathLike,
    files: Iterable[Mapping],
    output: str | os.PathLike | None = None,
    num_iterations: int = 50,
    seed: int | None = 0,
    num_speakers: Literal["auto", "oracle"] = "auto",
    freeze: Mapping[str, Any] | None = None,
    journal: str | os.PathLike | None = None,
    study_name: str = "pyannote-wavlm-prune",
    show_progress: bool = True,
    overwrite: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> OptimizationResult:
    """Tune segmentation and clustering hyper-parameters with pyannote.pipeline's Optimizer

    The search space is the pipeline's own: `segmentation.min_duration_off` and the
    clustering's hyper-parameters (threshold, method, min_cluster_size for
    AgglomerativeClustering; threshold, Fa, Fb for VBxClustering; none for KMeans and
    Oracle). The loss is the pipeline's metric (DER with its `der_variant`), pooled over
    `files`. The first trial is the pipeline's current parameters (or its defaults).

    Parameters
    ----------
    pipeline : SpeakerDiarization or path
        Pipeline, or the directory (or config.yaml) of an exported one.
    files : iterable of dict
        Annotated files, e.g. `get_files(protocol, "development")`.
    output : path, optional
        Write the tuned pipeline there (see `export_pipeline`).
    num_iterations : int, optional
        Number of trials. Defaults to 50.
    seed : int, optional
        Seed of the TPE sampler, for reproducible searches. Defaults to 0.
    num_speakers : {"auto", "oracle"}, optional
        "oracle" gives each file's reference number of speakers to the pipeline.
    freeze : dict, optional
        Hyper-parameters kept at the given values, e.g. {"segmentation":
        {"min_duration_off": 0.0}}.
    journal : path, optional
        Optuna journal file (".journal") to store trials in, so that a search resumes.
    study_name : str, optional
        Name of the study in `journal`.
    show_progress : bool, optional
        Progress bars over the trials (with the best loss so far) and over the files of
        the current trial. Defaults to True.
    overwrite : bool, optional
        Replace a non-empty `output` directory. Defaults to False.
    extra : dict, optional
        Additional entries under "optimization" in the written config.yaml.

    Returns
    -------
    result : OptimizationResult
    """
    if num_iterations < 1:
        raise ValueError(f"num_iterations={num_iterations}: expected at least 1 trial.")
    if num_speakers not in ("auto", "oracle"):
        raise ValueError(f"num_speakers={num_speakers!r}: expected 'auto' or 'oracle'.")
    if output is not None:
        output = Path(output)
        # now rather than after a long search; the tuned pipeline never replaces its input
        check_target(output, overwrite, [("the pipeline to tune", pipeline), ("journal", journal)])
    if not isinstance(pipeline, SpeakerDiarization):
        pipeline = load_pipeline(pipeline)

    files = list(files)
    for file in files:
        if "annotation" not in file:
            raise ValueError(f"{file['uri']} has no reference annotation: expected one to tune on.")
        if num_speakers == "oracle" and "pipeline_kwargs" in file:
            raise ValueError(
                f"{file['uri']} already has pipeline_kwargs: expected num_speakers='auto'."
            )
    if num_speakers == "oracle":
        for file in files:
            # pyannote.pipeline's Optimizer passes file["pipeline_kwargs"] to the pipeline
            file["pipeline_kwargs"] = {"num_speakers": len(file["annotation"].labels())}

    # read before freezing: freezing un-instantiates the frozen parameters
    warm_start = (
        pipeline.parameters(instantiated=True) if pipeline.instantiated
        else pipeline.default_parameters()
    )
    if freeze:
        pipeline.freeze(dict(freeze))
    optimizer = Optimizer(
        pipeline,
        db=None if journal is None else Path(journal),
        study_name=study_name,
        sampler=None if seed is None else TPESampler(seed=seed),
    )
    # frozen parameters are no longer part of the search space
    warm_start = _searchable(pipeline, warm_start)
    # one trial per call, to show "trial i/N" and the best DER so far; the files of the
    # current trial get pyannote.pipeline's own bar, below
    within_trial = {"desc": "files", "leave": False, "position": 1} if show_progress else False
    trials = tqdm(range(num_iterations), desc="trials", unit="trial", disable=not show_progress)
    try:
        for trial in trials:
            result = optimizer.tune(files, n_iterations=1, show_progress=within_trial,
                                    warm_start=warm_start if trial == 0 else None)
            trials.set_postfix_str(f"best {100 * result['loss']:.2f} %")
    finally:
        trials.close()
        pipeline.training = False
        for file in files:
            # leave the files as they came: the Optimizer caches segmentations and
            # embeddings inside them, and the oracle number of speakers was ours
            for key in [k for k in file if str(k).startswith("training_cache/")]:
                del file[key]
            if num_speakers == "oracle":
                del file["pipeline_kwargs"]

    params = result["params"]
    pipeline.instantiate(params)
    directory = None
    if output is not None:
        directory = save_pipeline(
            pipeline,
            output,
            params=pipeline.parameters(instantiated=True),
            extra={
                "optimization": {
                    "loss": float(result["loss"]),
                    "num_trials": len(optimizer.study_.trials),
                    "num_files": len(files),
                    "num_speakers": num_speakers,
                    "date": datetime.now().isoformat(timespec="seconds"),
                    **dict(extra or {}),
                }
            },
            overwrite=overwrite,
        )
    return OptimizationResult(
        params=pipeline.parameters(instantiated=True),
        loss=float(result["loss"]),
        num_trials=len(optimizer.study_.trials),
        directory=directory,
    )


def _searchable(pipeline: SpeakerDiarization, params: Mapping[str, Any]) -> dict:
    """`params` without the frozen parameters (no longer part of the search space)."""
    frozen = pipeline._flatten(pipeline.parameters(frozen=True))
    nested: dict = {}
    for name, value in pipeline._flatten(dict(params)).items():
        if name in frozen:
            continue
        *path, leaf = name.split(">")
        branch = nested
        for step in path:
            branch = branch.setdefault(step, {})
        branch[leaf] = value
    return nested
