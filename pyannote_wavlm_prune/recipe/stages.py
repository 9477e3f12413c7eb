"""The stages of the method, each resumable, and the recipe that chains them.

    train (fine-tune the teacher) > prune (DistillPrune, average, prune) >
    distill (further distillation) > finetune (fresh back end) > average

Every stage writes into its own directory of the experiment: `options.json` (what it runs
with, see `record.begin_stage`), `checkpoints/` (the k best epochs, `last.ckpt` and
`history.json`, see `KeepBestCheckpoints`) and, once finished, its result, written
atomically. Run again with the same options, a stage whose result exists is skipped and a
stage with a `last.ckpt` resumes from it, so re-running an interrupted recipe redoes nothing
that was finished; run with other options, it stops with the differences, unless `restart`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pyannote.database import Protocol

from ..data.references import check_references
from ..files import write_json_atomically
from ..frontends.cost import pruned_sparsity
from ..models.checkpoint import save_checkpoint
from ..models.loading import load_model, unpickling
from ..models.pruning import prune
from ..models.wavlm_segmentation import WavLMSegmentation
from ..options import merge_options, unknown_keys_error
from ..tasks import Distill, DistillPrune
from .averaging import KeepBestCheckpoints, average_checkpoints, selected_checkpoints
from .callbacks import EarlyStoppingAfter, SparsityTrajectory, StopAtTargetSparsity
from .record import begin_stage, describe_input
from .training import diarization_task, trainer

logger = logging.getLogger(__name__)

# what pyannote's SpeakerDiarization task logs on the development set
DIARIZATION_MONITOR = "loss/val"


@dataclass
class Budget:
    """How long a stage trains, and how its checkpoints are selected.

    max_epochs / max_steps: Lightning's (max_steps=-1: no limit). limit_train_batches: batches
    per epoch (None: pyannote's epoch, as long as the training set). k: checkpoints averaged.
    patience: early stopping (epochs without improvement; None: off). batch_size, duration:
    of the task. trainer: further Lightning Trainer options (accelerator, devices, ...).
    """

    max_epochs: int | None = 10
    max_steps: int = -1
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    k: int = 5
    patience: int | None = None
    batch_size: int = 32
    duration: float | None = None
    trainer: dict = field(default_factory=dict)

    def __post_init__(self):
        def refuse(name: str, expected: str):
            raise BudgetValueError(name, getattr(self, name), expected)

        for name in ("max_epochs", "k", "batch_size"):
            value = getattr(self, name)
            if not (value is None and name == "max_epochs") and not _is_int(value, 1):
                refuse(name, "a positive integer")
        if not (self.max_steps == -1 or _is_int(self.max_steps, 1)):
            refuse("max_steps", "a positive integer, or -1 (no limit)")
        if not (self.patience is None or _is_int(self.patience, 0)):
            refuse("patience", "a non-negative integer (epochs), or null (no early stopping)")
        for name in ("limit_train_batches", "limit_val_batches"):
            value = getattr(self, name)
            if not (value is None or _is_int(value, 1) or (
                    isinstance(value, float) and 0.0 < value <= 1.0)):
                refuse(name, "a positive number of batches, a fraction in (0, 1], or null")
        if not (self.duration is None or (isinstance(self.duration, (int, float))
                                          and not isinstance(self.duration, bool)
                                          and self.duration > 0)):
            refuse("duration", "a positive chunk duration in seconds, or null")
        if not isinstance(self.trainer, Mapping):
            refuse("trainer", "a mapping of Lightning Trainer options")

    @classmethod
    def from_dict(cls, options: Mapping[str, Any] | None, name: str = "budget") -> Budget:
        """A Budget of `options` (a mapping of its fields), or a one-line error naming the
        unknown key (and the closest known one) or the bad value; name: where it comes from."""
        if options is not None and not isinstance(options, Mapping):
            raise ValueError(f"{name}={options!r}: expected a mapping of budget options.")
        options = dict(options or {})
        unknown = set(options) - set(cls.__dataclass_fields__)
        if unknown:
            raise unknown_keys_error(name, unknown, cls.__dataclass_fields__)
        try:
            return cls(**options)
        except BudgetValueError as error:
            raise BudgetValueError(error.field, error.value, error.expected, name) from None

    def trainer_options(self) -> dict:
        options = {"max_epochs": self.max_epochs, "max_steps": self.max_steps}
        if self.limit_train_batches is not None:
            options["limit_train_batches"] = self.limit_train_batches
        if self.limit_val_batches is not None:
            options["limit_val_batches"] = self.limit_val_batches
        options.update(self.trainer)
        return options

    def record(self) -> dict:
        """The options that shape the result (where it runs, accelerator and devices, does not)."""
        options = dataclasses.asdict(self)
        options["trainer"] = {key: value for key, value in self.trainer.items()
                              if key not in ("accelerator", "devices")}
        return options


class BudgetValueError(ValueError):
    """A budget option out of its range or of the wrong type, named (`where`.field=value)."""

    def __init__(self, field: str, value: Any, expected: str, where: str = "budget"):
        super().__init__(f"{where}.{field}={value!r}: expected {expected}.")
        self.field, self.value, self.expected = field, value, expected


def _is_int(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


# start over: True, always; "changed", when the recorded options differ; False, never (an error)
Restart = bool | Literal["changed"]


def _fit(model, directory: Path, monitor: str, budget: Budget, minimum: tuple[str, float] | None = None,
         start_epoch: int = 0, callbacks: list | None = None, progress: bool = True) -> list[Path]:
    """Train `model` (resuming from `directory`/checkpoints/last.ckpt); return the selected epochs."""
    # bad turns would be trained on silently (pyannote.database takes an RTTM as it comes)
    check_references(model.task.protocol)
    checkpoints = directory / "checkpoints"
    callbacks = [KeepBestCheckpoints(checkpoints, monitor=monitor, k=budget.k, minimum=minimum),
                 *(callbacks or [])]
    if budget.patience is not None:
        callbacks.append(EarlyStoppingAfter(start_epoch=start_epoch, monitor=monitor, mode="min",
                                            patience=budget.patience, check_on_train_epoch_end=False))
    last = checkpoints / "last.ckpt"
    fit = trainer(default_root_dir=directory, callbacks=callbacks, progress=progress,
                  **budget.trainer_options())
    # our own checkpoints, resumed without running code: their pyannote objects (task
    # specifications) and random states are what `checkpoint_globals` allows
    with unpickling(last, "resumed") as weights_only:
        fit.fit(model, ckpt_path=last if last.exists() else None, weights_only=weights_only)
    return selected_checkpoints(checkpoints)


def _average_into(selected: list[Path], output: Path) -> Path:
    if not selected:
        raise RuntimeError(f"No checkpoint was selected for {output}: did the stage train at all?")
    return average_checkpoints(selected, output)


def train_stage(
    protocol: Protocol,
    directory: str | os.PathLike,
    model: WavLMSegmentation | None = None,
    model_options: Mapping[str, Any] | None = None,
    budget: Budget | None = None,
    progress: bool = True,
    task_options: Mapping[str, Any] | None = None,
    restart: Restart = False,
) -> Path:
    """Fine-tune a WavLMSegmentation for diarization; return its averaged checkpoint

    `model`: a model to fine-tune (for example one with a fresh back end); otherwise a new
    WavLMSegmentation(**model_options). `task_options`: further `diarization_task` options
    (max_speakers_per_chunk, num_workers, ...). Writes `directory`/model.ckpt. `restart`: see
    `record.begin_stage`.
    """
    budget = budget or Budget()
    options = {"protocol": protocol.name, "budget": budget.record(),
               "task_options": dict(task_options or {})}
    options.update({"model": describe_input(model)} if model is not None
                   else {"model_options": model_options or {}})
    directory = Path(directory)
    output = directory / "model.ckpt"
    if begin_stage(directory, "train", options, output, restart):
        return output
    return _train(protocol, directory, model, model_options, budget, progress, task_options)


def _train(protocol: Protocol, directory: Path, model: WavLMSegmentation | None,
           model_options: Mapping[str, Any] | None, budget: Budget, progress: bool,
           task_options: Mapping[str, Any] | None = None) -> Path:
    output = directory / "model.ckpt"
    task = diarization_task(protocol, duration=budget.duration or 8.0, batch_size=budget.batch_size,
                            cache_dir=directory, **dict(task_options or {}))
    if model is None:
        model = WavLMSegmentation(**dict(model_options or {}))
    model.task = task
    selected = _fit(model, directory, DIARIZATION_MONITOR, budget, progress=progress)
    return _average_into(selected, output)


def prune_stage(
    protocol: Protocol,
    directory: str | os.PathLike,
    teacher: str | os.PathLike | WavLMSegmentation,
    tolerance: float = 0.01,
    exact: bool = True,
    stop_at_target: bool = False,
    task_options: Mapping[str, Any] | None = None,
    budget: Budget | None = None,
    progress: bool = True,
    restart: Restart = False,
    student: str | os.PathLike | WavLMSegmentation | None = None,
    **options: Any,
) -> Path:
    """DistillPrune the teacher, average the k best students that reached the target, prune

    Only epochs whose pruned structure (eval-mode gates) has a sparsity of at least
    `sparsity - tolerance` are eligible, so that averaging never mixes in a student from
    before the target was reached; if averaging their gates gives a less sparse structure
    than that, the best eligible student is pruned alone. If no epoch reached it, the
    sparsest one is pruned and a warning says so.

    `exact`: finish exactly at the budget (`prune(student, sparsity=...)`: the marginal units
    are decided from the gates' scores until the pruned WavLM is within 0.005 of the target,
    in the task's objective). `directory`/pruning.json reports how many units differ from the
    deterministic gates and the validation distillation loss of both structures.

    `stop_at_target`: end the run at the first step after the warm-up where the pruned
    structure reaches `sparsity - tolerance` (`StopAtTargetSparsity(measure="pruned")`).

    `options` and `task_options`: `DistillPrune` options (sparsity, objective, warmup_epochs,
    learning_rate, controller, ...); the task's own defaults apply to those not given.

    `student`: the model whose units are gated and pruned (default: the teacher), e.g. the
    pruned and distilled model of an earlier round (progressive pruning, see
    `progressive_prune_stage`); the teacher stays the distillation's target. Gates start from
    the same random draw (seeded by the task's `seed`) on every run.

    Writes `directory`/student.ckpt (the selected gated student), `directory`/pruned.ckpt,
    and the run's sparsity trajectory (`directory`/sparsity.json, sparsity.png). `restart`:
    see `record.begin_stage`.
    """
    directory = Path(directory)
    output = directory / "pruned.ckpt"
    budget = budget or Budget()
    record = {"protocol": protocol.name, "teacher": describe_input(teacher), "tolerance": tolerance,
              "exact": exact, "stop_at_target": stop_at_target,
              "task": {**dict(task_options or {}), **options}, "budget": budget.record()}
    if student is not None:  # only when given: earlier records stay valid
        record["student"] = describe_input(student)
    if begin_stage(directory, "prune", record, output, restart,
                   inputs=[teacher, *([student] if student is not None else [])]):
        return output
    task = DistillPrune(protocol, teacher=teacher, batch_size=budget.batch_size,
                        duration=budget.duration, cache=directory / "task-cache.npz",
                        **{**dict(task_options or {}), **options})
    with torch.random.fork_rng():
        torch.manual_seed(task.seed)  # the gates' initial draw
        student = task.student(student)
    return _prune_student(task, student, directory, output, tolerance, exact, stop_at_target,
                          budget, progress)


def _prune_student(task: DistillPrune, student: WavLMSegmentation, directory: Path, output: Path,
                   tolerance: float, exact: bool, stop_at_target: bool, budget: Budget,
                   progress: bool) -> Path:
    """Train `student` on `task` in `directory`, average, prune (see `prune_stage`)."""
    # the targets training heads for: those given, or the highest reachable where lower
    sparsity, objective = task.reachable_sparsity, task.objective
    targets = task.reachable_targets
    callbacks = [SparsityTrajectory(directory)]
    if stop_at_target:
        callbacks.append(StopAtTargetSparsity(tolerance, patience=1, measure="pruned"))
    selected = _fit(student, directory, task.val_monitor[0], budget,
                    minimum=(task.margin_monitor, -tolerance), start_epoch=int(task.warmup_epochs),
                    callbacks=callbacks, progress=progress)

    def load(path: Path) -> tuple[WavLMSegmentation, float]:
        # averaging drops the multipliers: reload without them
        gated = load_model(path, "student", strict=False).eval()
        margin = min(pruned_sparsity(gated.frontend, objective, task.num_samples, module) - target
                     for module, target in targets.items())
        return gated, margin

    gated, margin = load(_average_into(selected, directory / "student.ckpt"))
    if len(selected) > 1 and not margin >= -tolerance:
        logger.warning("Averaging %d students gave a sparsity %.3f short of the target: pruning "
                       "the best one alone.", len(selected), -margin)
        gated, margin = load(_average_into(selected[:1], directory / "student.ckpt"))
    if not margin >= -tolerance and not exact:
        logger.warning("DistillPrune stopped %.3f short of its target %s: train longer.",
                       -margin, sparsity)
    pruned = prune(gated)
    if exact:
        deterministic = pruned
        pruned = prune(gated, sparsity=sparsity, objective=objective, num_samples=task.num_samples)
        report = pruned.budget_report
        before_loss = task.validation_distillation(deterministic)
        after_loss = task.validation_distillation(pruned) if report.changed else before_loss
        write_json_atomically(directory / "pruning.json", {
            "target": task.sparsity, "reachable": sparsity, "objective": objective,
            "sparsity_deterministic": report.sparsity_before, "sparsity": report.sparsity_after,
            "combined_sparsity": report.sparsity,
            "units_removed": report.removed, "units_restored": report.restored,
            "distillation_deterministic": before_loss, "distillation": after_loss,
        })
        logger.info("Pruned at a %s sparsity of %s (the gates': %s; whole front end %.4f), %d "
                    "units changed; validation distillation loss %s (the gates': %s)", objective,
                    report.sparsity_after, report.sparsity_before, report.sparsity,
                    report.changed, after_loss, before_loss)
    save_checkpoint(pruned, output)
    return output


def distill_stage(
    protocol: Protocol,
    directory: str | os.PathLike,
    teacher: str | os.PathLike | WavLMSegmentation,
    student: str | os.PathLike | WavLMSegmentation,
    task_options: Mapping[str, Any] | None = None,
    budget: Budget | None = None,
    progress: bool = True,
    restart: Restart = False,
) -> Path:
    """Further distil a pruned student from the teacher (no gates); writes `directory`/model.ckpt

    `restart`: see `record.begin_stage`.
    """
    directory = Path(directory)
    output = directory / "model.ckpt"
    budget = budget or Budget()
    record = {"protocol": protocol.name, "teacher": describe_input(teacher),
              "student": describe_input(student), "task": dict(task_options or {}),
              "budget": budget.record()}
    if begin_stage(directory, "distill", record, output, restart, inputs=[teacher, student]):
        return output
    task = Distill(protocol, teacher=teacher, batch_size=budget.batch_size, duration=budget.duration,
                   cache=directory / "task-cache.npz", **dict(task_options or {}))
    model = task.student(student)
    selected = _fit(model, directory, task.val_monitor[0], budget, progress=progress)
    return _average_into(selected, output)


def with_fresh_back_end(model: WavLMSegmentation | str | os.PathLike) -> WavLMSegmentation:
    """A copy of `model` keeping its (pruned) WavLM and re-initialising everything after it."""
    # a DistillPrune student's multipliers are dropped (strict=False)
    model = load_model(model, "model", expected=WavLMSegmentation, strict=False)
    fresh = type(model)(**{**model.hparams, "gates": None})
    fresh.frontend.load_state_dict(model.frontend.state_dict())
    return fresh


def finetune_stage(
    protocol: Protocol,
    directory: str | os.PathLike,
    model: str | os.PathLike | WavLMSegmentation,
    budget: Budget | None = None,
    fresh_back_end: bool = True,
    progress: bool = True,
    task_options: Mapping[str, Any] | None = None,
    restart: Restart = False,
    learning_rate: Mapping[str, float] | None = None,
) -> Path:
    """Diarization fine-tuning of a (pruned) model; writes `directory`/model.ckpt

    `fresh_back_end`: re-initialise everything after WavLM (the method's choice), or keep
    the back end `model` carries: after distillation, the teacher's, which already reads
    the distilled hidden states. Keeping it recovers more in short budgets (the quickstart)
    and ties the pruned model's accuracy to the teacher's rather than to a second,
    independent training of the back end. `task_options`: see `train_stage`. `restart`: see
    `record.begin_stage`. `learning_rate`: AdamW learning rates replacing the model's own
    (keys "wavlm", "backend"; those not given keep the model's).
    """
    budget = budget or Budget()
    record = {"protocol": protocol.name, "model": describe_input(model),
              "fresh_back_end": fresh_back_end, "budget": budget.record(),
              "task_options": dict(task_options or {})}
    if learning_rate:  # only when given: earlier records stay valid
        record["learning_rate"] = dict(learning_rate)
    directory = Path(directory)
    output = directory / "model.ckpt"
    if begin_stage(directory, "finetune", record, output, restart, inputs=[model]):
        return output
    if fresh_back_end:
        model = with_fresh_back_end(model)
    else:
        # the caller's model is not trained in place
        model = copy.deepcopy(load_model(model, "model", expected=WavLMSegmentation, strict=False))
        for parameter in model.parameters():
            parameter.requires_grad = True
    # hparams: what configure_optimizers reads and the checkpoint keeps
    model.hparams.learning_rate = merge_options("learning_rate", model.hparams.learning_rate,
                                                learning_rate)
    return _train(protocol, directory, model, None, budget, progress, task_options)




def check_schedule(schedule) -> list[float]:
    """A progressive schedule: rising targets in (0, 1), or a one-line ValueError."""
    if isinstance(schedule, (str, bytes)) or not isinstance(schedule, (list, tuple)) or not schedule:
        raise ValueError(f"schedule={schedule!r}: expected a list of rising targets in (0, 1), "
                         "e.g. [0.5, 0.8].")
    for index, target in enumerate(schedule):
        if isinstance(target, bool) or not isinstance(target, (int, float)) \
                or not 0.0 < target < 1.0 or (index and not target > schedule[index - 1]):
            raise ValueError(f"schedule[{index}]={target!r}: expected rising targets in (0, 1), "
                             "e.g. [0.5, 0.8].")
    return [float(target) for target in schedule]


def progressive_prune_stage(
    protocol: Protocol,
    directory: str | os.PathLike,
    teacher: str | os.PathLike | WavLMSegmentation,
    schedule: list[float],
    distill: Mapping[str, Any] | None = None,
    budget: Budget | None = None,
    progress: bool = True,
    restart: Restart = False,
    **options: Any,
) -> Path:
    """Progressive pruning: the targets of `schedule`, each reached from the last round's model

    Round i prunes the model of round i - 1 (the teacher for the first) to `schedule[i]`
    (`prune_stage`, always distilling from the teacher), then, before the next round,
    distils the pruned model further (`distill_stage`):

        `directory`/round-1/prune, round-1/distill, round-2/prune, ..., round-N/prune

    The last round is not distilled here: its pruned model is the result, as `prune_stage`'s
    is (a recipe's distill stage follows). Each round's stages are stages of their own,
    resumable and skipped once done, so an interrupted schedule resumes at its round; the
    result equals those stages run one after the other by hand.

    distill: options of the rounds' `distill_stage` (`budget`: a Budget or its dict,
    `task_options`). `budget` and `options`: every round's `prune_stage` (not `sparsity`,
    which the schedule gives). Writes `directory`/rounds.json: per round its target, the
    structure, sparsities (params; MACs per chunk) and validation distillation losses
    (after pruning, and after the round's distillation).
    """
    schedule = check_schedule(schedule)
    if "sparsity" in options or "sparsity" in (options.get("task_options") or {}):
        raise ValueError("sparsity and schedule: expected one of them (the schedule's last "
                         "target is the final sparsity).")
    distill = dict(distill or {})
    distill_budget = distill.pop("budget", None)
    if not isinstance(distill_budget, Budget):
        distill_budget = Budget.from_dict(distill_budget, name="distill.budget")
    directory = Path(directory)
    model, rounds = None, []
    for index, target in enumerate(schedule, start=1):
        folder = directory / f"round-{index}"
        pruned = prune_stage(protocol, folder / "prune", teacher, budget=budget, progress=progress,
                             restart=restart, student=model, sparsity=target, **options)
        rounds.append(_round_record(index, target, pruned, folder / "prune"))
        if index == len(schedule):
            break
        model = distill_stage(protocol, folder / "distill", teacher, pruned,
                              budget=distill_budget, progress=progress, restart=restart, **distill)
        history = folder / "distill" / "checkpoints" / "history.json"
        scores = [entry["score"] for entry in
                  (json.loads(history.read_text())["history"] if history.is_file() else [])
                  if entry.get("score") is not None and math.isfinite(entry["score"])]
        rounds[-1]["distillation_after_distill"] = min(scores) if scores else None
        write_json_atomically(directory / "rounds.json", rounds)
    write_json_atomically(directory / "rounds.json", rounds)
    return pruned


def _round_record(index: int, target: float, pruned: Path, directory: Path) -> dict:
    """What a progressive round made: its structure, sparsities and validation loss."""
    model = load_model(pruned, "pruned")
    num_samples = round(model.specifications.duration * model.hparams.sample_rate)
    structure = model.structure
    report = directory / "pruning.json"
    loss = json.loads(report.read_text()).get("distillation") if report.is_file() else None
    return {"round": index, "target": target, "structure": structure.to_dict(),
            "sparsity": structure.sparsity("params"),
            "sparsity_macs": structure.sparsity("macs", num_samples),
            "distillation_after_prune": loss}
