"""Checkpoint selection during training, and averaging of the selected checkpoints."""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import lightning
import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states

from ..files import atomic_path, check_output_location, finite_or_none, write_json_atomically
from ..interrupts import uninterrupted
from ..models.checkpoint import save_atomically
from ..models.loading import read_checkpoint

# what a Lightning checkpoint holds for resuming, not for inference
TRAINING_STATE_KEYS = ("optimizer_states", "lr_schedulers", "loops", "callbacks", "MixedPrecision")


def select_epochs(
    history: Sequence[dict],
    k: int,
    after_peak: bool = True,
    minimum: tuple[str, float] | None = None,
) -> list[dict]:
    """The k entries of `history` with the lowest "score", among the eligible ones

    Parameters
    ----------
    history : sequence of {"epoch": int, "score": float, ...}
        One entry per validated epoch, in training order.
    k : int
        How many to keep.
    after_peak : bool, optional
        Only consider epochs after the one with the highest score (the validation loss of a
        pruning run rises while the target sparsity does, then falls: the early, unpruned
        epochs are not what we want to average). Defaults to True.
    minimum : (str, float), optional
        (key, value): only consider entries whose `key` is at least `value`, for example the
        real sparsity of a pruning run's students. When no entry qualifies, the one with
        the largest `key` is selected alone (the closest to the requirement).
    """
    if k < 1:
        raise ValueError(f"k={k}: expected at least one checkpoint to keep.")
    finite = [entry for entry in history if math.isfinite(entry["score"])]
    if minimum is not None:
        key, value = minimum
        measured = [entry for entry in finite if math.isfinite(entry.get(key, math.nan))]
        eligible = [entry for entry in measured if entry[key] >= value]
        if not eligible:
            return [max(measured, key=lambda entry: entry[key])] if measured else []
        finite = eligible
    if after_peak and len(finite) > 1:
        peak = max(range(len(finite)), key=lambda i: finite[i]["score"])
        # the peak itself stays eligible when it is the last epoch (nothing after it yet)
        finite = finite[peak + 1:] or finite[peak:]
    return sorted(finite, key=lambda entry: entry["score"])[:k]


class KeepBestCheckpoints(lightning.Callback):
    """Keeps the k best checkpoints (by a validation quantity) and a last one to resume from

    Writes into `directory`: `epoch=E.ckpt` for the currently selected epochs (see
    `select_epochs`), `last.ckpt` (full training state, for `Trainer.fit(ckpt_path=...)`)
    and `history.json` (every epoch's score and the selection). Files are written next to
    their destination and renamed into place; a SIGTERM or SIGINT that arrives while they
    are written waits until all of them are (`interrupts.uninterrupted`), so that a resumed
    run finds the checkpoints its history selects.

    Parameters
    ----------
    directory : path
    monitor : str
        Logged validation quantity (lower is better).
    k : int, optional
        Defaults to 5.
    after_peak : bool, optional
        See `select_epochs`. Defaults to False.
    minimum : (str, float), optional
        (logged quantity, value): only epochs where the quantity is at least `value` are
        eligible (see `select_epochs`); the quantity is recorded in the history.
    """

    def __init__(self, directory: str | os.PathLike, monitor: str, k: int = 5, after_peak: bool = False,
                 minimum: tuple[str, float] | None = None):
        self.directory = Path(directory)
        self.monitor = monitor
        self.k = k
        self.after_peak = after_peak
        self.minimum = minimum
        self.history: list[dict] = []

    def _save(self, trainer: lightning.Trainer, path: Path, weights_only: bool) -> None:
        # only the global zero process writes (the others take part in the collectives)
        with atomic_path(path) if trainer.is_global_zero else contextlib.nullcontext(path) as target:
            trainer.save_checkpoint(target, weights_only=weights_only)
        trainer.strategy.barrier()

    def _on_epoch_end(self, trainer: lightning.Trainer) -> None:
        if trainer.sanity_checking:
            return
        # the epoch's checkpoints, history and last.ckpt agree: a signal waits for all three
        with uninterrupted():
            self._record_epoch(trainer)

    def _record_epoch(self, trainer: lightning.Trainer) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        value = trainer.callback_metrics.get(self.monitor)
        score = float(value) if value is not None else math.inf
        epoch = trainer.current_epoch
        path = self.directory / f"epoch={epoch}.ckpt"
        entry = {"epoch": epoch, "step": trainer.global_step, "score": score, "path": path.name}
        if self.minimum is not None:
            measured = trainer.callback_metrics.get(self.minimum[0])
            entry[self.minimum[0]] = float(measured) if measured is not None else math.nan
        self.history.append(entry)
        selected = select_epochs(self.history, self.k, self.after_peak, self.minimum)
        if any(entry["epoch"] == epoch for entry in selected):
            self._save(trainer, path, weights_only=True)
        if trainer.is_global_zero:
            keep = {entry["path"] for entry in selected}
            for stale in self.directory.glob("epoch=*.ckpt"):
                if stale.name not in keep:
                    stale.unlink()
            # strict JSON: an epoch without its monitored value has a null score
            write_json_atomically(self.directory / "history.json", finite_or_none(
                {"monitor": self.monitor, "history": self.history,
                 "selected": [e["path"] for e in selected]}))
        # last: after the selection, so that a resumed run knows the history
        self._save(trainer, self.directory / "last.ckpt", weights_only=False)

    def on_validation_end(self, trainer, pl_module):
        self._validated_epoch = trainer.current_epoch
        self._on_epoch_end(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        # Lightning validates before this hook: only runs without validation get here unsaved;
        # a run resumed from the checkpoint of an epoch's validation ends that epoch again
        recorded = any(entry["epoch"] == trainer.current_epoch for entry in self.history)
        if getattr(self, "_validated_epoch", None) != trainer.current_epoch and not recorded:
            self._on_epoch_end(trainer)

    def state_dict(self) -> dict:
        # the random states too: a resumed run draws what the uninterrupted one would have
        return {"history": self.history, "rng": _collect_rng_states()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict.get("history", []))
        if "rng" in state_dict:
            _set_rng_states(state_dict["rng"])


def selected_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Paths of the checkpoints a KeepBestCheckpoints callback selected in `directory`."""
    directory = Path(directory)
    history = directory / "history.json"
    if not history.exists():
        raise FileNotFoundError(f"{history} does not exist: is {directory} a training run's directory?")
    selected = json.loads(history.read_text())["selected"]
    return [directory / name for name in selected]


def average_checkpoints(paths: Sequence[str | os.PathLike], output: str | os.PathLike) -> Path:
    """Write the average of pyannote checkpoints of one architecture into `output`

    Floating-point tensors are averaged; BatchNorm counters take their largest value; other
    tensors must agree and are copied. The
    hyper-parameters and task specifications are those of the first checkpoint; the training
    state (optimizer, loops) is dropped, the multipliers of a DistillPrune student too.
    Inputs are never modified; the output is written next to its destination, then renamed.
    """
    paths = [Path(path) for path in paths]
    if not paths:
        raise ValueError("No checkpoint to average.")
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"Checkpoints not found: {missing}")
    # inputs are never modified: not through a link to one either
    check_output_location(output, [("a checkpoint to average", path) for path in paths])

    first = read_checkpoint(paths[0], "averaged")
    if "pyannote.audio" not in first:
        raise ValueError(f"{paths[0]} is not a pyannote checkpoint (no 'pyannote.audio' block).")
    architecture = first["pyannote.audio"]["architecture"]
    total = {name: tensor.double() if tensor.is_floating_point() else tensor
             for name, tensor in first["state_dict"].items()}
    for path in paths[1:]:
        checkpoint = read_checkpoint(path, "averaged")
        if checkpoint.get("pyannote.audio", {}).get("architecture") != architecture:
            raise ValueError(f"{path} is not a {architecture['class']} like {paths[0]}.")
        state = checkpoint["state_dict"]
        if set(state) != set(total) or any(state[n].shape != total[n].shape for n in total):
            raise ValueError(f"{path} and {paths[0]} have different structures: cannot average them.")
        for name, tensor in state.items():
            if tensor.is_floating_point():
                total[name] += tensor.double()
            elif name.endswith("num_batches_tracked"):
                # a counter of BatchNorm updates (the Conformer's), not a weight
                total[name] = torch.maximum(total[name], tensor)
            elif not torch.equal(tensor, total[name]):
                raise ValueError(f"{path} and {paths[0]} differ in non-float tensor {name}.")

    first["state_dict"] = {
        name: (tensor / len(paths)).to(first["state_dict"][name].dtype) if tensor.is_floating_point() else tensor
        for name, tensor in total.items()
        if not name.startswith("loss_func.")
    }
    for key in TRAINING_STATE_KEYS:
        first.pop(key, None)

    return save_atomically(first, output)
