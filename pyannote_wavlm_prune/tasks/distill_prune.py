"""DistillPrune: learning which WavLM units to remove, by distillation from a frozen teacher."""

from __future__ import annotations

import copy
import inspect
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pyannote.audio.tasks import SpeakerDiarization
from pyannote.database import Protocol
from torch import nn

from ..data.protocols import check_train_files, training_subset
from ..frontends.cost import (
    MODULES,
    expected_sparsity,
    module_sparsity,
    pruned_sparsity,
    shift_gates_to_sparsity,
    smallest_sparsity,
)
from ..frontends.gating import check_units
from ..frontends.structure import METRICS
from ..frontends.units import DEFAULT_UNITS
from ..models.loading import load_model
from ..models.pruning import attach_gates
from ..models.wavlm_segmentation import WavLMSegmentation
from ..options import merge_options

CONTROLLERS = ("projection", "lagrangian")

logger = logging.getLogger(__name__)


class Lagrangian(nn.Module):
    """lambda1 (s - t) + lambda2 (s - t)^2, the multipliers being trained by gradient ASCENT

    Attached to the student as `model.loss_func`, as pyannote attaches trainable losses, so
    that the multipliers are checkpointed with the student (and `Model.from_pretrained`
    drops them with a warning when the student is reloaded outside of its task).
    """

    def __init__(self):
        super().__init__()
        self.lambda1 = nn.Parameter(torch.zeros(()))
        self.lambda2 = nn.Parameter(torch.zeros(()))

    def forward(self, gap: torch.Tensor) -> torch.Tensor:
        """gap (Tensor): scalar, expected sparsity minus target sparsity"""
        return self.lambda1 * gap + self.lambda2 * gap**2

    def parameter_group(self, learning_rate: float) -> dict:
        """The optimizer's group of the multipliers: ascent (`maximize`), no weight decay

        With it, the controller drives the expected sparsity to its target while the rest
        descends (tests/test_distill_prune.py shows it on gates alone).
        """
        return {"params": list(self.parameters()), "lr": learning_rate, "weight_decay": 0.0,
                "maximize": True, "name": "lagrangian"}


def default_distilled_layers(num_layers: int) -> list[int]:
    """Hidden states distilled by default: the input of layer 1 and every third of the stack.

    {0, 4, 8, 12} for WavLM Base+, {0, 8, 16, 24} for Large (docs/method.md#the-objective).
    """
    return sorted({round(i * num_layers / 3) for i in range(4)})


def distillation_loss(
    student: Sequence[torch.Tensor],
    teacher: Sequence[torch.Tensor],
    l1_weight: float = 1.0,
    cosine_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sum over the distilled layers of l1_weight * mean|S - T| - cosine_weight * mean cos(S, T)

    student, teacher (sequences of Tensors): each of shape (batch, frames, features)
    returns (Tensors): the loss, its L1 part and its cosine part (scalars)
    """
    l1 = sum(F.l1_loss(s, t) for s, t in zip(student, teacher))
    cosine = sum(F.cosine_similarity(s, t, dim=-1).mean() for s, t in zip(student, teacher))
    return l1_weight * l1 - cosine_weight * cosine, l1, cosine


class Distill(SpeakerDiarization):
    """Distillation of a WavLMSegmentation's WavLM hidden states from a frozen teacher

    The student learns to reproduce the teacher's hidden states of `distilled_layers`
    (L1 distance minus cosine similarity, summed over layers). No diarization labels are
    used: pyannote's SpeakerDiarization task provides data, chunking and validation only, and
    the student's back end is left untouched. This is the "further distillation" stage of a
    pruned model; `DistillPrune` adds the gates and the sparsity objective.

    Usage
    -----
    >>> task = Distill(protocol, teacher=teacher)
    >>> student = task.student(pruned)
    >>> lightning.Trainer(max_epochs=10).fit(student)

    Parameters
    ----------
    protocol : pyannote.database SpeakerDiarizationProtocol
    teacher : WavLMSegmentation or str or path
        The fine-tuned model (or its checkpoint), unpruned or pruned, not gated. It is never
        modified.
    distilled_layers : sequence of int, optional
        Indices of the hidden states to distil (0 = input of layer 1, L = last layer).
        Defaults to the input and every third of the stack ({0, 4, 8, 12} for Base+).
    l1_weight, cosine_weight : float, optional
        Weights of the L1 and cosine parts of the distillation loss. Default to 1.
    learning_rate : dict, optional
        AdamW learning rates; {"student": 2e-4} here, plus those of subclasses.
    validate : bool, optional
        Compute the validation distillation loss on the development set (needed for early
        stopping and checkpoint selection). Defaults to True.
    seed : int, optional
        Seed of the per-step random state (gate samples, dropout), so that a resumed run
        draws what an uninterrupted one would have. Defaults to 0.
    train_files : float or int, optional
        Train on part of the protocol's training files: a fraction in (0, 1] or a number of
        files, drawn reproducibly (seeded by `seed`, `data.protocols.training_subset`; the
        chosen uris are `train_uris`). Defaults to all of them.
    duration : float, optional
        Chunk duration. Defaults to the teacher's.
    max_speakers_per_chunk : int, optional
        Defaults to the teacher's, so that the student keeps the teacher's classifier.
    kwargs
        Passed to `pyannote.audio.tasks.SpeakerDiarization` (batch_size, cache, ...).
    """

    LEARNING_RATE_DEFAULTS = {"student": 2e-4}

    def __init__(
        self,
        protocol: Protocol,
        teacher: WavLMSegmentation | str | os.PathLike,
        distilled_layers: Sequence[int] | None = None,
        l1_weight: float = 1.0,
        cosine_weight: float = 1.0,
        learning_rate: dict | None = None,
        validate: bool = True,
        seed: int = 0,
        train_files: float | int | None = None,
        duration: float | None = None,
        max_speakers_per_chunk: int | None = None,
        num_workers: int = 0,
        **kwargs: Any,
    ):
        learning_rate = merge_options("learning_rate", self.LEARNING_RATE_DEFAULTS, learning_rate)
        check_train_files(train_files)
        teacher = self._load_teacher(teacher)
        num_layers = teacher.frontend.num_layers
        distilled_layers = (
            default_distilled_layers(num_layers) if distilled_layers is None else list(distilled_layers)
        )
        bad = [index for index in distilled_layers if not 0 <= index <= num_layers]
        if bad or not distilled_layers:
            raise ValueError(
                f"distilled_layers={distilled_layers}: expected hidden-state indices in "
                f"[0, {num_layers}] (0 = input of layer 1, {num_layers} = last layer)."
            )

        specifications = teacher.specifications
        if train_files is not None:
            protocol = training_subset(protocol, train_files, seed)
        self.train_uris = getattr(protocol, "train_uris", None)
        self.train_files = train_files
        super().__init__(
            protocol,
            duration=specifications.duration if duration is None else duration,
            max_speakers_per_chunk=(
                len(specifications.classes) if max_speakers_per_chunk is None else max_speakers_per_chunk
            ),
            max_speakers_per_frame=specifications.powerset_max_classes or 2,
            num_workers=num_workers,
            **kwargs,
        )
        if validate and not self.has_validation:
            raise ValueError(
                f"Protocol {protocol.name} has no development set, which {type(self).__name__} "
                "uses for validation (early stopping, checkpoint selection): add one, or pass "
                "validate=False."
            )

        self.teacher = teacher
        self.distilled_layers = distilled_layers
        self.l1_weight = l1_weight
        self.cosine_weight = cosine_weight
        self.learning_rate = learning_rate
        self.validate = validate
        self.seed = seed

    @staticmethod
    def _load_teacher(teacher) -> WavLMSegmentation:
        teacher = load_model(teacher, "teacher", expected=WavLMSegmentation)
        if teacher.hparams.gates:
            raise ValueError(
                f"teacher carries gates on {list(teacher.hparams.gates)}: expected an ungated "
                "WavLMSegmentation (prune() a gated student to use it as a teacher).")
        try:
            _ = teacher.specifications
        except Exception as error:
            raise ValueError(
                "teacher has no task specifications: train (fine-tune) it on a diarization task first."
            ) from error
        teacher = teacher.eval()
        for parameter in teacher.parameters():
            parameter.requires_grad = False
        return teacher

    @staticmethod
    def _freeze_all_but_frontend(student: WavLMSegmentation) -> None:
        for parameter in student.parameters():
            parameter.requires_grad = False
        for parameter in student.frontend.parameters():
            parameter.requires_grad = True

    def _bind(self, student: WavLMSegmentation) -> WavLMSegmentation:
        """Bind `student` to this task; only its WavLM front end (weights, gates) learns."""
        self._freeze_all_but_frontend(student)
        student.task = self
        # Lightning keeps the modes modules have: a copy of the (eval-mode) teacher would
        # otherwise train with deterministic gates and no dropout
        return student.train()

    def setup_loss_func(self):
        # Model.setup() has just rebuilt the classifier (build()): freeze it again, or DDP
        # would find trainable parameters outside the loss
        self._freeze_all_but_frontend(self.model)

    def student(self, model: WavLMSegmentation | str | os.PathLike | None = None) -> WavLMSegmentation:
        """A copy of `model` (a WavLMSegmentation, or its checkpoint) bound to this task

        `model` defaults to the teacher: here, the pruned model to distil further.
        """
        model = self.teacher if model is None else load_model(model, "student",
                                                              expected=WavLMSegmentation)
        if model.frontend.hidden_size != self.teacher.frontend.hidden_size:
            raise ValueError(
                f"student width {model.frontend.hidden_size} differs from the teacher's "
                f"{self.teacher.frontend.hidden_size}: hidden states cannot be compared."
            )
        return self._bind(copy.deepcopy(model))

    def setup_validation_metric(self):
        # the validation quantity is the distillation loss, not DER
        pass

    def parameter_groups(self, model: WavLMSegmentation) -> list[dict]:
        """AdamW groups: the student's WavLM weights."""
        weights = [p for p in model.frontend.parameters() if p.requires_grad]
        return [{"params": weights, "lr": self.learning_rate["student"], "name": "student"}]

    @property
    def val_monitor(self):
        return f"{type(self).__name__}/val/distillation", "min"

    def _teacher_states(self, waveforms: torch.Tensor) -> list[torch.Tensor]:
        if next(self.teacher.parameters()).device != waveforms.device:
            self.teacher.to(waveforms.device)
        with torch.no_grad():
            states = self.teacher.frontend(waveforms)
        return [states[index] for index in self.distilled_layers]

    def _distill(self, waveforms: torch.Tensor):
        teacher = self._teacher_states(waveforms)
        states = self.model.frontend(waveforms)
        student = [states[index] for index in self.distilled_layers]
        return distillation_loss(student, teacher, self.l1_weight, self.cosine_weight)

    def _log(self, name: str, value, batch_size: int, prog_bar: bool = False) -> None:
        self.model.log(
            f"{type(self).__name__}/{name}", value, on_step=True, on_epoch=False,
            prog_bar=prog_bar, logger=True, batch_size=batch_size,
        )

    def _seed_step(self) -> None:
        # gate samples and dropout depend on the step only: a resumed run draws what an
        # uninterrupted run would have (and every DDP rank draws the same gates)
        torch.manual_seed(self.seed * 1_000_003 + self.model.global_step)

    # what `penalty` reports that the progress bar shows too
    PROGRESS_BAR: tuple[str, ...] = ()

    def penalty(self) -> tuple[torch.Tensor | float, dict[str, float]]:
        """What the training objective adds to the distillation loss (nothing here), and
        this step's values of the objective to log and record (none here)

        No side effect: `training_step` logs the values and keeps them as
        `self.trajectory_point` (see `recipe.callbacks.SparsityTrajectory`).
        """
        return 0.0, {}

    def before_step(self) -> None:
        """What the training objective changes before each step's forward (nothing here)."""

    def training_step(self, batch, batch_idx: int):
        self._seed_step()
        self.before_step()
        waveforms = batch["X"][:, 0]
        distill, l1, cosine = self._distill(waveforms)
        batch_size = waveforms.shape[0]
        penalty, point = self.penalty()
        loss = distill + penalty
        self._log("train/distillation", distill, batch_size, prog_bar=True)
        self._log("train/l1", l1, batch_size)
        self._log("train/cosine", cosine, batch_size)
        self._log("train/loss", loss, batch_size)
        for name, value in point.items():
            if name != "step":
                self._log(name, value, batch_size, prog_bar=name in self.PROGRESS_BAR)
        self.trajectory_point = point or None
        return {"loss": loss}

    def validation_step(self, batch, batch_idx: int):
        waveforms = batch["X"][:, 0]
        distill, _, _ = self._distill(waveforms)
        self.model.log(
            self.val_monitor[0], distill, on_step=False, on_epoch=True,
            prog_bar=True, logger=True, batch_size=waveforms.shape[0], sync_dist=True,
        )
        return {"loss": distill}

    @torch.no_grad()
    def validation_distillation(self, model: WavLMSegmentation) -> float | None:
        """Mean distillation loss of `model`'s WavLM on the development set (eval mode)

        None without validation (validate=False). The task must be set up (it is after
        `Trainer.fit`).
        """
        if not self.validate:
            return None
        training = model.training
        model.eval()
        total, count = 0.0, 0
        for batch in self.val_dataloader():
            waveforms = batch["X"][:, 0]
            teacher = self._teacher_states(waveforms)
            states = model.frontend(waveforms.to(next(model.parameters()).device))
            loss, _, _ = distillation_loss([states[i] for i in self.distilled_layers], teacher,
                                           self.l1_weight, self.cosine_weight)
            total += float(loss) * len(waveforms)
            count += len(waveforms)
        model.train(training)
        return total / count if count else None

    def val_dataloader(self):
        # an empty list is Lightning's "no validation" (None is refused)
        return super().val_dataloader() if self.validate else []


class DistillPrune(Distill):
    """Structured pruning of a WavLMSegmentation's WavLM, guided by distillation

    The student is a copy of the (fine-tuned, frozen) teacher whose WavLM carries
    hard-concrete gates. It learns to reproduce the teacher's hidden states while a
    Lagrangian drives its expected sparsity (of parameters or of MACs) to a target that rises
    linearly during a warm-up, then stays:

        L = L_distill + lambda1 (s - t) + lambda2 (s - t)^2

    minimised over the student's WavLM weights and gates, maximised over the multipliers.

    Usage
    -----
    >>> task = DistillPrune(protocol, teacher=teacher, sparsity=0.8, objective="params")
    >>> student = task.student()
    >>> lightning.Trainer(max_epochs=30).fit(student)
    >>> pruned = prune(student)

    Parameters
    ----------
    protocol : pyannote.database SpeakerDiarizationProtocol
    teacher : WavLMSegmentation or str or path
        The fine-tuned model to prune (or its checkpoint). It is never modified. It may be
        pruned already (e.g. DiariZen's s80 models): the gates then act on the units it kept,
        and pruning makes it smaller still.
    sparsity : float or dict, optional
        Target sparsity in (0, 1) (0 is refused: use train for no pruning), always relative
        to the unpruned architecture of the teacher's WavLM config, pruned teacher or not:
        pruning an s80 model to s90 is sparsity=0.9. At least the teacher's own sparsity
        (`initial_sparsity`). Defaults to 0.8 (overall pruning). Module-wise pruning: a
        target per module, {module: target} with modules of `frontends.cost.MODULES` ("cnn" and
        "transformer", or per unit kind "cnn", "heads" and "ffn"; a module's sparsity counts
        what its unit kinds carry, `frontends.cost.module_sparsity`); modules not named are not
        pruned (their gates stay open), and the front end's combined sparsity follows.
        A target beyond what pruning can reach (`max_sparsity`: every unit removed but one
        channel per CNN layer) is warned of, and pruning goes as far as it can.
    objective : {"params", "macs"}, optional
        What the sparsity counts: WavLM parameters, or WavLM MACs for one chunk of `duration`.
        Defaults to "params".
    warmup_epochs : float, optional
        Epochs over which the target rises linearly from the teacher's sparsity (0 for an
        unpruned teacher) to `sparsity`. Defaults to 5.
    warmup_steps : int, optional
        Same, in optimisation steps (overrides `warmup_epochs`).
    units : sequence of str, optional
        Gated unit kinds, among `frontends.UNITS`. Defaults to `frontends.DEFAULT_UNITS`.
    learning_rate : dict, optional
        AdamW learning rates {"student": 2e-4, "gates": 2e-2, "lagrangian": 2e-2}.
    controller : {"projection", "lagrangian"}, optional
        How the expected sparsity follows the target. "projection" (default): before each
        step, one offset added to every gate's log_alpha puts the expected sparsity exactly
        on the target (`frontends.cost.shift_gates_to_sparsity`); the distillation decides which
        units stay. "lagrangian": the papers' L = L_distill + lambda1 (s - t) + lambda2 (s - t)^2,
        the multipliers trained by Adam ascent: an integral controller acting on gates that
        move in lockstep, which swings the sparsity past the target in short runs
        (docs/method.md#controllers).
    decay : bool, optional
        After the warm-up, decay every learning rate linearly to 0 at the last step of the
        run (Trainer's max_steps, or max_epochs x batches). It damps the "lagrangian"
        controller's oscillation, but can also freeze the sparsity off target when it decays
        too early. Defaults to False.
    kwargs
        Those of `Distill` (distilled_layers, l1_weight, cosine_weight, validate, seed,
        duration, max_speakers_per_chunk) and of pyannote's SpeakerDiarization task.
    """

    LEARNING_RATE_DEFAULTS = {**Distill.LEARNING_RATE_DEFAULTS, "gates": 2e-2, "lagrangian": 2e-2}

    @classmethod
    def check_targets(cls, **options: Any) -> None:
        """Raise, before any work, for a target the task would refuse (sparsity outside (0, 1),
        an unknown objective, units or controller, a negative warm-up) among `options` (its
        keyword arguments; those not given take their defaults); other options are ignored."""
        parameters = inspect.signature(cls.__init__).parameters
        names = ("sparsity", "objective", "warmup_epochs", "warmup_steps", "units", "controller")
        cls._check_targets(*(options.get(name, parameters[name].default) for name in names))

    @staticmethod
    def _check_targets(sparsity, objective, warmup_epochs, warmup_steps, units, controller):
        """The checks of `check_targets`; return the units, checked."""
        units = check_units(units)
        targets = dict(sparsity) if isinstance(sparsity, Mapping) else {None: sparsity}
        if not targets:
            raise ValueError(f"sparsity={sparsity}: expected a target, or a target per module "
                             f"among {list(MODULES)}.")
        for module, target in targets.items():
            name = "sparsity" if module is None else f"sparsity[{module!r}]"
            if module is not None and module not in MODULES:
                raise ValueError(f"{name}: unknown module, expected some of {list(MODULES)}.")
            # 0 would still prune: the gates start half open and close units on their own
            if isinstance(target, bool) or not isinstance(target, (int, float)) \
                    or not 0.0 < target < 1.0:
                raise ValueError(f"{name}={target!r}: expected a target in (0, 1); for no "
                                 "pruning, use train (or finetune) instead.")
            if module is not None and not set(MODULES[module]) & set(units):
                raise ValueError(f"{name}: none of the module's units {list(MODULES[module])} "
                                 f"is gated (units={list(units)}).")
        if None not in targets:
            named = [module for module in targets for _ in MODULES[module]]
            kinds = [kind for module in targets for kind in MODULES[module]]
            shared = sorted({named[i] for i, kind in enumerate(kinds) if kinds.count(kind) > 1})
            if shared:
                raise ValueError(f"sparsity: modules {shared} share unit kinds: expected "
                                 "modules that do not overlap (cnn and transformer, or cnn, "
                                 "heads and ffn).")
            if controller != "projection":
                raise ValueError(f"controller={controller!r}: module-wise targets need "
                                 "controller='projection'.")
        if objective not in METRICS:
            raise ValueError(f"objective={objective!r}: expected one of {METRICS}.")
        if controller not in CONTROLLERS:
            raise ValueError(f"controller={controller!r}: expected one of {CONTROLLERS}.")
        if warmup_steps is not None and warmup_steps < 0:
            raise ValueError(f"warmup_steps={warmup_steps}: expected a non-negative number of steps.")
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs={warmup_epochs}: expected a non-negative number of epochs.")
        return units

    def __init__(
        self,
        protocol: Protocol,
        teacher: WavLMSegmentation | str | os.PathLike,
        sparsity: float | Mapping[str, float] = 0.8,
        objective: Literal["params", "macs"] = "params",
        warmup_epochs: float = 5.0,
        warmup_steps: int | None = None,
        units: Sequence[str] = DEFAULT_UNITS,
        controller: Literal["projection", "lagrangian"] = "projection",
        decay: bool = False,
        **kwargs: Any,
    ):
        units = self._check_targets(sparsity, objective, warmup_epochs, warmup_steps, units,
                                    controller)
        super().__init__(protocol, teacher, **kwargs)
        self.sparsity = dict(sparsity) if isinstance(sparsity, Mapping) else sparsity
        # {module: target}, module None for the whole front end (overall pruning)
        self.targets = dict(sparsity) if isinstance(sparsity, Mapping) else {None: sparsity}
        if None not in self.targets:
            # module-wise: only the named modules' units are gated; the others stay whole
            units = tuple(unit for unit in units
                          if any(unit in MODULES[module] for module in self.targets))
        self.objective = objective
        self.warmup_epochs = warmup_epochs
        self.warmup_steps = warmup_steps
        self.units = units
        self.controller = controller
        self.decay = decay
        frontend = self.teacher.frontend
        samples = self.num_samples if objective == "macs" else None
        self.initial_sparsity = float(expected_sparsity(frontend, frontend.config, objective,
                                                        samples))
        # per module: the teacher's sparsity, the highest pruning can reach, the target
        # training heads for (the given one, or that highest if it is out of reach)
        self.initial_sparsities, self.max_sparsity, reachable = {}, {}, {}
        for module, target in self.targets.items():
            name = "sparsity" if module is None else f"sparsity[{module!r}]"
            what = "" if module is None else f" of the {module} module"
            initial = (self.initial_sparsity if module is None
                       else module_sparsity(frontend, module, objective, samples))
            if target < initial:
                raise ValueError(
                    f"{name}={target}: the teacher is already pruned to a {objective} sparsity"
                    f"{what} of {initial:.4f} (relative to its unpruned architecture, as every "
                    "target is): expected a target at least as high.")
            highest = smallest_sparsity(frontend, units, objective, samples, module)
            if target > highest:
                logger.warning(
                    "%s=%s is out of reach: pruning %s can remove at most %.4f of the %s%s "
                    "(every unit but one channel per CNN layer; what no unit kind prunes "
                    "stays). Pruning goes as far as that.", name, target, list(units), highest,
                    objective, what)
            self.initial_sparsities[module] = initial
            self.max_sparsity[module] = highest
            reachable[module] = min(target, highest)
        # what `prune(student, sparsity=...)` should land on
        self.reachable_sparsity = reachable[None] if None in reachable else reachable
        self.reachable_targets = reachable

    def lr_scheduler(self, optimizer: torch.optim.Optimizer):
        """Constant during the warm-up, then linear decay to 0 at the last training step."""
        if not self.decay or self.trainer is None:
            return None
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            return None
        warmup = min(self.num_warmup_steps(), total - 1)

        def factor(step: int) -> float:
            if step < warmup:
                return 1.0
            return max(0.0, (total - step) / max(total - warmup, 1))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def student(self, model: WavLMSegmentation | str | os.PathLike | None = None) -> WavLMSegmentation:
        """A gated copy of `model` (default: the teacher), bound to this task

        The gates' objective is recorded in the student's hyper-parameters, so that
        `prune(student, sparsity=...)` finishes in the same metric. With the "lagrangian"
        controller, the student carries the multipliers (`loss_func`).
        """
        if model is not None:
            # a pruned model to prune further (progressive pruning): the warm-up starts at
            # its sparsity
            model = load_model(model, "student", expected=WavLMSegmentation)
            self._start_at(model)
        model = self.teacher if model is None else model
        student = copy.deepcopy(model)
        attach_gates(student, units=self.units)
        student.hparams.gates_objective = {"objective": self.objective,
                                           "num_samples": self.num_samples}
        student = self._bind(student)
        if self.controller == "lagrangian":
            student.loss_func = Lagrangian()  # after _bind, which freezes all but the front end
        return student

    def _start_at(self, model: WavLMSegmentation) -> None:
        """Start the warm-up at `model`'s sparsity (if sparser than the teacher's), or raise
        if it is sparser than a target already."""
        frontend = model.frontend
        samples = self.num_samples if self.objective == "macs" else None
        for module, target in self.targets.items():
            initial = (float(expected_sparsity(frontend, frontend.config, self.objective, samples))
                       if module is None
                       else module_sparsity(frontend, module, self.objective, samples))
            if initial > target:
                name = "sparsity" if module is None else f"sparsity[{module!r}]"
                raise ValueError(f"{name}={target}: the student is already pruned to "
                                 f"{initial:.4f} ({self.objective}): expected a target at least "
                                 "as high.")
            self.initial_sparsities[module] = max(self.initial_sparsities[module], initial)

    def setup_loss_func(self):
        super().setup_loss_func()
        if self.controller != "lagrangian":
            return
        # keep the multipliers of a student built by `student()` (or restored from a checkpoint)
        if isinstance(getattr(self.model, "loss_func", None), Lagrangian):
            for parameter in self.model.loss_func.parameters():
                parameter.requires_grad = True
        else:
            self.model.loss_func = Lagrangian()

    def parameter_groups(self, model: WavLMSegmentation) -> list[dict]:
        """AdamW groups: student weights, gates (no decay), multipliers (ascent, no decay)."""
        weights, gates = [], []
        for name, parameter in model.frontend.named_parameters():
            if parameter.requires_grad:
                (gates if name.startswith("gates.") else weights).append(parameter)
        rates = self.learning_rate
        groups = [
            {"params": weights, "lr": rates["student"], "name": "student"},
            {"params": gates, "lr": rates["gates"], "weight_decay": 0.0, "name": "gates"},
        ]
        if self.controller == "lagrangian":
            groups.append(model.loss_func.parameter_group(rates["lagrangian"]))
        return groups

    @property
    def num_samples(self) -> int:
        """Samples in one training chunk (MACs are counted for this length)."""
        return round(self.duration * self.teacher.hparams.sample_rate)

    def num_warmup_steps(self) -> float:
        """Optimisation steps of the warm-up (`warmup_steps`, or `warmup_epochs` in steps)."""
        if self.warmup_steps is not None:
            return float(self.warmup_steps)
        batches = getattr(self.trainer, "num_training_batches", None) if self.trainer else None
        if batches is None or not math.isfinite(batches):
            batches = self.train__len__() // self.batch_size
        return self.warmup_epochs * max(int(batches), 1)

    @property
    def modules(self) -> list[str | None]:
        """The modules with a target: [None] (the whole front end), or the named modules."""
        return list(self.targets)

    def target_sparsity(self, step: int, module: str | None = None) -> float:
        """Target at optimisation step `step`: linear warm-up from the teacher's sparsity
        (`initial_sparsity`, 0 for an unpruned teacher), then `sparsity` (or the highest
        reachable, if lower); `module`: that module's (module-wise targets)."""
        module = self._module(module)
        end = self.reachable_targets[module]
        warmup = self.num_warmup_steps()
        if warmup <= 0:
            return end
        start = self.initial_sparsities[module]
        return start + (end - start) * min(1.0, step / warmup)

    def _module(self, module: str | None) -> str | None:
        if module is None and None not in self.targets:
            module = self.modules[0]
        if module not in self.targets:
            raise ValueError(f"module={module!r}: expected one of the targets' {self.modules}.")
        return module

    def expected_sparsity(self, metric: str | None = None, module: str | None = None) -> torch.Tensor:
        """Expected sparsity of the student (objective's metric by default), differentiable;
        of the whole front end, or of `module`."""
        metric = metric or self.objective
        samples = self.num_samples if metric == "macs" else None
        if module is not None:
            return module_sparsity(self.model.frontend, module, metric, samples)
        return expected_sparsity(self.model.frontend, self.teacher.frontend.config, metric=metric,
                                 num_samples=samples)

    def pruned_sparsity(self, metric: str | None = None, module: str | None = None) -> float:
        """Exact sparsity (objective's metric by default) of what `prune` would make now, of
        the whole front end or of `module`

        Counts the structure of the eval-mode (deterministic) gates, what pruning keeps,
        where `expected_sparsity` is the training objective's expectation.
        """
        return pruned_sparsity(self.model.frontend, metric or self.objective, self.num_samples,
                               module)

    def sparsity_margin(self) -> float:
        """How far the pruned structure is past its target(s): min over the targets of the
        pruned sparsity minus the (reachable) target; >= -tolerance is "on target"."""
        return min(self.pruned_sparsity(module=module) - self.reachable_targets[module]
                   for module in self.modules)

    @property
    def sparsity_monitor(self) -> str:
        """Logged at validation: `pruned_sparsity()`, the whole front end's."""
        return f"{type(self).__name__}/val/sparsity"

    @property
    def margin_monitor(self) -> str:
        """Logged at validation: `sparsity_margin()`, for checkpoint selection."""
        return f"{type(self).__name__}/val/sparsity_margin"

    def validation_step(self, batch, batch_idx: int):
        output = super().validation_step(batch, batch_idx)
        if batch_idx == 0:
            self._validation_sparsity = (self.pruned_sparsity(), self.sparsity_margin())
        for name, value in zip((self.sparsity_monitor, self.margin_monitor),
                               self._validation_sparsity, strict=True):
            self.model.log(name, value, on_step=False, on_epoch=True,
                           prog_bar=name == self.sparsity_monitor, logger=True, batch_size=1,
                           sync_dist=True)
        return output

    def before_step(self) -> None:
        """Projection controller: put the expected sparsity on this step's target."""
        self._shift = {}
        if self.controller == "projection":
            for module in self.modules:
                self._shift[module] = shift_gates_to_sparsity(
                    self.model.frontend, self.teacher.frontend.config,
                    self.target_sparsity(self.model.global_step, module), self.objective,
                    self.num_samples if self.objective == "macs" else None, module=module)

    PROGRESS_BAR = ("target", "pruned")

    def penalty(self) -> tuple[torch.Tensor | float, dict[str, float]]:
        """The Lagrangian of the expected sparsity's gap to the target ("lagrangian"
        controller; 0 with "projection"), and this step's sparsities and controller state

        returns: (penalty, {"step", "target", "lambda1", "lambda2" or "shift", "expected_params",
            "expected_macs", "pruned", and each module's "target_M", "expected_M",
            "pruned_M"}), what `training_step` logs and records
        """
        step = self.model.global_step
        point = {"step": int(step)}
        if None in self.targets:
            point["target"] = float(self.target_sparsity(step))
        if self.controller == "lagrangian":
            penalty = self.model.loss_func(self.expected_sparsity() - point["target"]).float()
            point["lambda1"] = float(self.model.loss_func.lambda1)
            point["lambda2"] = float(self.model.loss_func.lambda2)
        else:
            penalty = 0.0
            for module, shift in self._shift.items():
                point["shift" if module is None else f"shift_{module}"] = float(shift)
        with torch.no_grad():
            for metric in METRICS:
                point[f"expected_{metric}"] = float(self.expected_sparsity(metric))
            point["pruned"] = self.pruned_sparsity()
            for module in self.modules:
                if module is not None:
                    point[f"target_{module}"] = float(self.target_sparsity(step, module))
                    point[f"expected_{module}"] = float(self.expected_sparsity(module=module))
                    point[f"pruned_{module}"] = self.pruned_sparsity(module=module)
        return penalty, point
