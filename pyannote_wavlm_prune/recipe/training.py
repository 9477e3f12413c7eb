"""Training a WavLMSegmentation with pyannote's own SpeakerDiarization task."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import lightning
from lightning.pytorch.loggers import CSVLogger
from pyannote.audio.tasks import SpeakerDiarization
from pyannote.database import Protocol


def task_cache_path(protocol: Protocol, duration: float, cache_dir: str | os.PathLike | None) -> Path:
    """Where the task caches the protocol's metadata, one file per protocol AND chunk duration.

    pyannote keys its cache by protocol name only: reusing one file for two durations would
    silently train on the chunks of the other duration.
    """
    # without a directory, a fresh one: a shared temporary directory would hand a stale cache
    # (pyannote reuses any existing file) to another corpus with the same protocol name
    directory = Path(cache_dir) if cache_dir is not None else Path(tempfile.mkdtemp(prefix="pyannote-wavlm-prune-"))
    safe_name = protocol.name.replace("/", "_")
    return directory / f"pyannote-wavlm-prune-{safe_name}-{duration:g}s.npz"


def diarization_task(
    protocol: Protocol,
    duration: float = 8.0,
    batch_size: int = 32,
    max_speakers_per_chunk: int | None = 4,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int = 0,
    **kwargs: Any,
) -> SpeakerDiarization:
    """pyannote's powerset SpeakerDiarization task with METHOD's defaults (8 s, <= 4 speakers).

    Parameters
    ----------
    protocol : pyannote.database SpeakerDiarizationProtocol
    duration : float, optional
        Chunk duration in seconds. Defaults to 8.
    batch_size : int, optional
        Defaults to 32.
    max_speakers_per_chunk : int, optional
        Defaults to 4 (11 powerset classes with at most 2 speakers per frame).
    cache_dir : path, optional
        Where the protocol's metadata is cached. Defaults to a new temporary directory.
    num_workers : int, optional
        Data loading processes. Defaults to 0 (in-process).
    kwargs
        Passed to `pyannote.audio.tasks.SpeakerDiarization`.
    """
    if duration <= 0:
        raise ValueError(f"duration={duration}: expected a positive chunk duration in seconds.")
    return SpeakerDiarization(
        protocol,
        duration=duration,
        batch_size=batch_size,
        max_speakers_per_chunk=max_speakers_per_chunk,
        max_speakers_per_frame=2,
        cache=task_cache_path(protocol, duration, cache_dir),
        num_workers=num_workers,
        **kwargs,
    )


def trainer(
    max_steps: int = -1,
    max_epochs: int | None = None,
    default_root_dir: str | os.PathLike | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> lightning.Trainer:
    """A Lightning Trainer with quiet defaults: no sanity check, no model summary

    Metrics go to a CSV logger in `default_root_dir` (none without a directory), one
    `logs/version_N/metrics.csv` per run: a resumed run adds its own file rather than
    replacing the epochs of the interrupted one (Lightning deletes an existing metrics.csv).
    """
    logger = False
    if default_root_dir is not None:
        logger = CSVLogger(default_root_dir, name="logs")
    options = {
        "max_steps": max_steps,
        "max_epochs": max_epochs,
        "default_root_dir": default_root_dir,
        "enable_progress_bar": progress,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "logger": logger,
        "enable_checkpointing": False,
    }
    options.update(kwargs)
    return lightning.Trainer(**options)
