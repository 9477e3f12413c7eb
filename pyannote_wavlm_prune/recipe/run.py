"""The whole method from one YAML file: `Recipe.from_yaml(path).run()`, resumable."""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pyannote.audio.tasks import SpeakerDiarization
from pyannote.database import Protocol

from ..data.protocols import check_train_files, get_protocol
from ..files import check_output_location, check_writable
from ..frontends import presets
from ..frontends.architectures import ARCHITECTURES
from ..models.wavlm_segmentation import WavLMSegmentation
from ..options import (
    check_against_defaults,
    check_options,
    parameter_hints,
    unknown_keys_error,
)
from ..tasks import Distill, DistillPrune
from .stages import (
    Budget,
    check_schedule,
    distill_stage,
    finetune_stage,
    progressive_prune_stage,
    prune_stage,
    train_stage,
)
from .sweep import check_sweep
from .training import diarization_task

STAGES = ("teacher", "prune", "distill", "finetune")
# the directories of the experiment the stages write
STAGE_DIRECTORIES = ("1-teacher", "2-prune", "3-distill", "4-finetune")
# the stage functions' options, read once from the functions themselves
PRUNE_STAGE_HINTS = parameter_hints(prune_stage)
FINETUNE_LEARNING_RATE = parameter_hints(finetune_stage)["learning_rate"]
# the recipe's own keys and their types (the stages' options are checked by `Recipe.validate`)
RECIPE_KEYS = {"protocol": str, "experiment": str, "database": str | list[str] | None,
               "sweep": dict | None, **{stage: dict | None for stage in STAGES}}
# what the stages set themselves: the protocol, the teacher, the chunks (the budget's), caches
STAGE_SET = ("protocol", "teacher", "duration", "batch_size", "cache", "cache_dir", "progress",
             "restart", "validate")


def read_yaml(path: Path):
    """The content of the YAML file `path`, or a one-line ValueError naming its line."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = "; ".join(" ".join(part.split()) for part in (error.context, error.problem) if part)
        raise ValueError(f"{where}: not valid YAML ({problem}): expected a recipe as "
                         "`pyannote-wavlm-prune recipe --example` writes one.") from error
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({' '.join(str(error).split())}).") from error


def _without(hints: dict, names) -> dict:
    return {name: hint for name, hint in hints.items() if name not in names}


def _task_hints(task) -> dict:
    """The options a stage's `task` (a class or a function) takes, without those the stage
    sets itself: its own, and those its **kwargs pass on (to its base classes, to pyannote's
    SpeakerDiarization task), down to the first that takes no **kwargs."""
    chain = [cls for cls in task.__mro__ if "__init__" in vars(cls)] if isinstance(task, type) \
        else [task, SpeakerDiarization]
    taken = []
    for function in chain:
        taken.append(function)
        parameters = inspect.signature(function).parameters.values()
        if not any(parameter.kind == parameter.VAR_KEYWORD for parameter in parameters):
            break
    return _without(parameter_hints(*taken), STAGE_SET)


def _check_learning_rate(name: str, rates, defaults) -> None:
    """Learning rates: the keys of `defaults`, positive numbers."""
    check_against_defaults(name, rates, defaults)
    for key, value in dict(rates or {}).items():
        if not value > 0:
            raise ValueError(f"{name}.{key}={value!r}: expected a positive learning rate.")


@dataclass
class Recipe:
    """The whole method, read from a YAML file (see `Recipe.from_yaml` for the keys)."""

    protocol: str
    experiment: Path
    database: list[str] = field(default_factory=list)
    teacher: dict = field(default_factory=dict)
    prune: dict = field(default_factory=dict)
    distill: dict = field(default_factory=dict)
    finetune: dict = field(default_factory=dict)
    # a grid of pruning runs from the same teacher (`recipe.sweep`), run by `sweep` only
    sweep: dict | None = None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> Recipe:
        """Read a recipe

        protocol: Simulated.SpeakerDiarization.tiny       # pyannote.database protocol
        database: [database.yml]                           # optional, relative to this file
        experiment: experiments/tiny                       # output, relative to this file
        teacher:
          checkpoint: teacher.ckpt                         # a fine-tuned WavLMSegmentation, or:
          model: {wavlm: microsoft/wavlm-base-plus}        # WavLMSegmentation options
          budget: {max_epochs: 20, batch_size: 32}         # see Budget
          task: {max_speakers_per_chunk: 4}                # see diarization_task
        prune: {sparsity: 0.8, objective: params, warmup_epochs: 5, tolerance: 0.01,
                exact: true, budget: {...}, task: {...}}   # see prune_stage
               # module-wise: sparsity: {cnn: 0.5, transformer: 0.85} (see DistillPrune);
               # progressive: schedule: [0.5, 0.8] instead of sparsity, rounds distilled
               # with the distill stage's options (see progressive_prune_stage);
               # data quantity: train_files: 0.25 (a fraction, or a number of files)
        distill: {budget: {...}, task: {...}}
        finetune: {budget: {...}, fresh_back_end: true, task: {...},
                   learning_rate: {wavlm: 2e-5}}      # default: the model's own
        sweep: {strategies: [overall, module-wise, progressive], objectives: [params, macs],
                targets: [0.5, 0.8, 0.9], train_files: [0.25, 1.0], ...}
                # run by `pyannote-wavlm-prune sweep` (see recipe.sweep), not by `recipe`

        A `wavlm: {preset: tiny|base_plus|large, ...overrides}` builds a config of
        `pyannote_wavlm_prune.frontends.presets` (random initialisation).

        Every key and value is checked when the recipe is read (`validate`), before any
        stage trains: a YAML syntax error, an unknown key (with the closest known one) or a
        value of the wrong type is one line naming it, and the file's line for the syntax.
        """
        path = Path(path)
        content = read_yaml(path)
        if content is not None and not isinstance(content, Mapping):
            raise ValueError(f"{path}: expected a mapping of recipe keys (protocol, experiment, "
                             f"...), got {type(content).__name__}.")
        content = dict(content or {})
        check_options(str(path), content, RECIPE_KEYS)
        for key in ("protocol", "experiment"):
            if key not in content:
                raise ValueError(f"{path}: the recipe needs a '{key}' key.")
        database = content.get("database") or []
        database = [database] if isinstance(database, str) else list(database)
        recipe = cls(
            protocol=content["protocol"],
            experiment=(path.parent / content["experiment"]).resolve(),
            database=[str((path.parent / d).resolve()) for d in database],
            teacher=content.get("teacher") or {},
            prune=content.get("prune") or {},
            distill=content.get("distill") or {},
            finetune=content.get("finetune") or {},
            sweep=content.get("sweep"),
        )
        recipe.validate(inputs=[("the recipe", path)])
        return recipe

    def validate(self, inputs: list[tuple[str, object]] = ()) -> None:
        """Raise a one-line ValueError for the first key or value no stage would accept

        Keys are those of the functions and classes each stage calls (unknown ones are named,
        with the closest known key), values are checked against their type hints and the
        targets, learning rates and budgets against their ranges, all before anything trains;
        the experiment must not replace or write into an input, and must be writable.
        """
        for stage in STAGES:
            options = getattr(self, stage)
            if not isinstance(options, Mapping):
                raise ValueError(f"{stage}={options!r}: expected a mapping of the stage's options.")
            Budget.from_dict(options.get("budget"), name=f"{stage}.budget")
        inputs = [*inputs, *self._check_teacher(), *(("database", d) for d in self.database)]
        self._check_prune()
        check_options("distill", self.distill, {"budget": dict, "task": dict})
        task = self.distill.get("task") or {}
        check_options("distill.task", task, _task_hints(Distill))
        check_train_files(task.get("train_files"))
        _check_learning_rate("distill.task.learning_rate", task.get("learning_rate"),
                             Distill.LEARNING_RATE_DEFAULTS)
        check_options("finetune", self.finetune,
                      {"budget": dict, "task": dict, "fresh_back_end": bool,
                       "learning_rate": FINETUNE_LEARNING_RATE})
        check_options("finetune.task", self.finetune.get("task"), _task_hints(diarization_task))
        if self.sweep is not None:
            check_sweep(self.sweep)
        _check_learning_rate("finetune.learning_rate", self.finetune.get("learning_rate"),
                             WavLMSegmentation.LEARNING_RATE_DEFAULTS)
        # a given teacher is not trained: 1-teacher/ is not written (it may hold that teacher)
        written = STAGE_DIRECTORIES[1:] if "checkpoint" in self.teacher else STAGE_DIRECTORIES
        check_output_location(self.experiment, inputs, writes=written, name="experiment")
        check_writable(self.experiment, into=True)

    def _check_teacher(self) -> list[tuple[str, object]]:
        """Check the teacher's options; return its checkpoint as an input, if it is given."""
        teacher = self.teacher
        check_options("teacher", teacher, {"checkpoint": str, "model": dict, "budget": dict,
                                           "task": dict})
        check_options("teacher.task", teacher.get("task"), _task_hints(diarization_task))
        model = teacher.get("model") or {}
        check_options("teacher.model", model, _without(parameter_hints(WavLMSegmentation), {"task"}))
        for name in ("projection", "conformer"):
            check_against_defaults(f"teacher.model.{name}", model.get(name),
                                   getattr(WavLMSegmentation, f"{name.upper()}_DEFAULTS"))
        _check_learning_rate("teacher.model.learning_rate", model.get("learning_rate"),
                             WavLMSegmentation.LEARNING_RATE_DEFAULTS)
        resolve_wavlm_option(model.get("wavlm"))
        if "checkpoint" not in teacher:
            return []
        if not Path(teacher["checkpoint"]).exists():
            raise FileNotFoundError(f"teacher.checkpoint {teacher['checkpoint']} does not exist: "
                                    "expected the path of a checkpoint.")
        return [("teacher.checkpoint", teacher["checkpoint"])]

    def _check_prune(self) -> None:
        """Check the prune stage: its own options, and DistillPrune's (top level or `task`)."""
        task_hints = _task_hints(DistillPrune)
        stage_hints = _without(PRUNE_STAGE_HINTS, {*STAGE_SET, "directory",
                                                              "task_options", "budget"})
        options = dict(self.prune)
        check_options("prune", options, {**stage_hints, **task_hints, "budget": dict, "task": dict,
                                          "schedule": list})
        task = dict(options.pop("task", None) or {})
        check_options("prune.task", task, task_hints)
        task.update({key: value for key, value in options.items() if key in task_hints})
        if "schedule" in options:
            if "sparsity" in task:
                raise ValueError("prune: sparsity and schedule both given: expected one of them "
                                 "(the schedule's last target is the final sparsity).")
            try:
                task["sparsity"] = check_schedule(options["schedule"])[-1]
            except ValueError as error:
                raise ValueError(f"prune.{error}") from None
        DistillPrune.check_targets(**task)
        check_train_files(task.get("train_files"))
        _check_learning_rate("prune.learning_rate", task.get("learning_rate"),
                             DistillPrune.LEARNING_RATE_DEFAULTS)
        if options.get("tolerance", 0.0) < 0:
            raise ValueError(f"prune.tolerance={options['tolerance']}: expected a non-negative "
                             "sparsity tolerance.")

    def get_protocol(self) -> Protocol:
        return get_protocol(self.database, self.protocol)

    def run(self, progress: bool = True, restart: bool = False) -> dict[str, Path]:
        """Run (or resume) every stage; return the result of each

        A stage whose recorded options differ from the recipe's stops the run, unless
        `restart`: then that stage starts over, and so do those after it (their input changed).
        """
        self.validate()  # before the first stage trains: a recipe built in code, too
        restart = "changed" if restart else False
        protocol = self.get_protocol()
        root = self.experiment
        results: dict[str, Path] = {"teacher": self.teacher_checkpoint(protocol, progress, restart)}
        options = dict(self.prune)
        prune_budget = Budget.from_dict(options.pop("budget", None))
        task_options = options.pop("task", None)
        if "schedule" in options:
            # progressive: rounds in 2-prune/round-N/, distilled between rounds as below
            results["pruned"] = progressive_prune_stage(
                protocol, root / "2-prune", results["teacher"], options.pop("schedule"),
                distill={"budget": Budget.from_dict(self.distill.get("budget")),
                         "task_options": self.distill.get("task")},
                task_options=task_options, budget=prune_budget, progress=progress,
                restart=restart, **options)
        else:
            results["pruned"] = prune_stage(protocol, root / "2-prune", results["teacher"],
                                            task_options=task_options, budget=prune_budget,
                                            progress=progress, restart=restart, **options)
        results["distilled"] = distill_stage(
            protocol, root / "3-distill", results["teacher"], results["pruned"],
            task_options=self.distill.get("task"), budget=Budget.from_dict(self.distill.get("budget")),
            progress=progress, restart=restart,
        )
        results["final"] = finetune_stage(protocol, root / "4-finetune", results["distilled"],
                                          budget=Budget.from_dict(self.finetune.get("budget")),
                                          fresh_back_end=self.finetune.get("fresh_back_end", True),
                                          progress=progress, task_options=self.finetune.get("task"),
                                          restart=restart,
                                          learning_rate=self.finetune.get("learning_rate"))
        return results


    def teacher_checkpoint(self, protocol: Protocol, progress: bool = True,
                           restart: bool | str = False) -> Path:
        """The teacher: `teacher.checkpoint`, or trained (resumed) in `experiment`/1-teacher."""
        if "checkpoint" in self.teacher:
            return Path(self.teacher["checkpoint"])
        model_options = dict(self.teacher.get("model") or {})
        model_options["wavlm"] = resolve_wavlm_option(model_options.get("wavlm"))
        return train_stage(protocol, self.experiment / "1-teacher", model_options=model_options,
                           budget=Budget.from_dict(self.teacher.get("budget")), progress=progress,
                           task_options=self.teacher.get("task"), restart=restart)


def resolve_wavlm_option(wavlm):
    """`{preset: name, **overrides}` -> a config of `frontends.presets`; anything else unchanged."""
    if isinstance(wavlm, Mapping) and "preset" in wavlm:
        options = dict(wavlm)
        name = options.pop("preset")
        builders = {"tiny": presets.tiny_config, "base_plus": presets.base_plus_config,
                    "large": presets.large_config}
        if name not in builders:
            raise ValueError(f"wavlm preset {name!r}: expected one of {sorted(builders)}.")
        # a config takes any key silently: a misspelt one would be ignored. The tiny preset
        # has a layout ("family": base or large) and any architecture (wavlm, hubert,
        # wav2vec2); the others are WavLM's
        architecture = options.get("architecture", "wavlm") if name == "tiny" else "wavlm"
        if architecture not in ARCHITECTURES:
            raise ValueError(f"wavlm preset {name}: architecture={architecture!r}, expected one "
                             f"of {sorted(ARCHITECTURES)}.")
        known = {*ARCHITECTURES[architecture].config_class().to_dict(),
                 *(["family", "architecture"] if name == "tiny" else [])}
        unknown = set(options) - known
        if unknown:
            raise unknown_keys_error(f"wavlm preset {name}", unknown, known)
        if name == "tiny":
            return builders[name](**options)
        config = builders[name]()
        for key, value in options.items():
            setattr(config, key, value)
        return config
    return wavlm

