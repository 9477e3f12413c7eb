"""Training a WavLMSegmentation with pyannote's own SpeakerDiarization task."""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import lightning
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from lightning.pytorch.loggers import CSVLogger
from pyannote.audio.tasks import SpeakerDiarization
from pyannote.database import Protocol

from .. import console


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
    """pyannote's powerset SpeakerDiarization task with the method's defaults (8 s, <= 4 speakers)

    The defaults: docs/method.md#the-segmentation-model.

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


class StageProgressBar(TQDMProgressBar):
    """One bar for a whole training stage: optimizer step i/N, the epoch, whole metrics

    Lightning's default bar (Rich, when installed) restarts every epoch, reads "Epoch 3/-2"
    when a stage is bounded by steps (max_epochs=-1), and cuts metric names to fit its
    column ("DiarizationErrorRa…"). This one counts the stage's optimizer steps (a resumed
    stage starts where it stopped), says "epoch e/E" (or "epoch e" without an epoch bound),
    and shows only the metrics whose name and value fit whole on the terminal's line (all
    of them when the output is not a terminal: a log file has no line width).
    """

    # room for the description, percentage, counts, times and rate around the metrics
    RESERVED_COLUMNS = 60

    def __init__(self, columns: int | None = None):
        super().__init__()
        self.columns = columns  # None: the terminal's width, read at each update

    def epoch_description(self, trainer: lightning.Trainer) -> str:
        epoch = trainer.current_epoch + 1
        bounded = trainer.max_epochs is not None and trainer.max_epochs > 0
        return f"epoch {epoch}/{trainer.max_epochs}" if bounded else f"epoch {epoch}"

    def metrics_text(self, metrics: dict[str, Any]) -> str:
        """`name=value` pairs, whole, as many as fit on the line (in logging order).

        Components of a metric that is shown whole ("DiarizationErrorRate/Miss" beside
        "DiarizationErrorRate") are left out on a quiet command line (`console.quiet`).
        """
        if not console.details():
            metrics = {name: value for name, value in metrics.items()
                       if "/" not in name or name.split("/")[0] not in metrics}
        columns = self.columns
        if columns is None and sys.stdout.isatty():
            columns = shutil.get_terminal_size().columns
        room = math.inf if columns is None else columns - self.RESERVED_COLUMNS
        items = []
        for name, value in metrics.items():
            if name == "v_num":
                continue
            text = f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}"
            if len(", ".join([*items, text])) > room:
                break
            items.append(text)
        return ", ".join(items)

    def on_train_start(self, trainer, pl_module):
        total = trainer.estimated_stepping_batches
        # drawn on creation: with its description and length already
        self.train_progress_bar = Tqdm(
            desc=self.epoch_description(trainer),
            total=total if math.isfinite(total) else None,
            initial=trainer.global_step,
            unit="step",
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=True,
            file=sys.stdout,
            smoothing=0,
            bar_format=self.BAR_FORMAT,
        )

    def on_train_epoch_start(self, trainer, *_):
        self.train_progress_bar.set_description(self.epoch_description(trainer), refresh=False)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        bar = self.train_progress_bar
        if bar.n != trainer.global_step:
            bar.n = trainer.global_step
            bar.set_postfix_str(self.metrics_text(self.get_metrics(trainer, pl_module)))

    def on_train_epoch_end(self, trainer, pl_module):
        self.train_progress_bar.set_postfix_str(self.metrics_text(self.get_metrics(trainer, pl_module)))

    def on_validation_end(self, trainer, pl_module):
        # not Lightning's: it would draw every metric first, cut at the line's end
        self.val_progress_bar.close()
        self.reset_dataloader_idx_tracker()
        if self._train_progress_bar is not None and trainer.state.fn == "fit":
            self.train_progress_bar.set_postfix_str(self.metrics_text(self.get_metrics(trainer, pl_module)))


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
    With `progress`, a `StageProgressBar` (unless `callbacks` hold a progress bar already).
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
    callbacks = list(options.pop("callbacks", None) or [])
    if options["enable_progress_bar"] and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(StageProgressBar())
    return lightning.Trainer(callbacks=callbacks, **options)
