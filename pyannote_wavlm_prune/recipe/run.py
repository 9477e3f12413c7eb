"""The whole method from one YAML file: `Recipe.from_yaml(path).run()`, resumable."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pyannote.database import Protocol

from ..data.protocols import get_protocol
from ..wavlm import presets
from .stages import Budget, distill_stage, finetune_stage, prune_stage, train_stage

STAGES = ("teacher", "prune", "distill", "finetune")


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
        distill: {budget: {...}, task: {...}}
        finetune: {budget: {...}, fresh_back_end: true, task: {...},
                   learning_rate: {wavlm: 2e-5}}      # default: the model's own

        A `wavlm: {preset: tiny|base_plus|large, ...overrides}` builds a config of
        `pyannote_wavlm_prune.wavlm.presets` (random initialisation).
        """
        path = Path(path)
        content = yaml.safe_load(path.read_text()) or {}
        unknown = set(content) - {"protocol", "experiment", "database", *STAGES}
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}; expected protocol, experiment, "
                             f"database, {', '.join(STAGES)}.")
        for key in ("protocol", "experiment"):
            if key not in content:
                raise ValueError(f"{path}: the recipe needs a '{key}' key.")
        database = content.get("database") or []
        database = [database] if isinstance(database, str) else list(database)
        return cls(
            protocol=content["protocol"],
            experiment=(path.parent / content["experiment"]).resolve(),
            database=[str((path.parent / d).resolve()) for d in database],
            teacher=content.get("teacher") or {},
            prune=content.get("prune") or {},
            distill=content.get("distill") or {},
            finetune=content.get("finetune") or {},
        )

    def get_protocol(self) -> Protocol:
        return get_protocol(self.database, self.protocol)

    def run(self, progress: bool = True, restart: bool = False) -> dict[str, Path]:
        """Run (or resume) every stage; return the result of each

        A stage whose recorded options differ from the recipe's stops the run, unless
        `restart`: then that stage starts over, and so do those after it (their input changed).
        """
        restart = "changed" if restart else False
        protocol = self.get_protocol()
        root = self.experiment
        results: dict[str, Path] = {}

        if "checkpoint" in self.teacher:
            results["teacher"] = Path(self.teacher["checkpoint"])
        else:
            model_options = dict(self.teacher.get("model") or {})
            model_options["wavlm"] = resolve_wavlm_option(model_options.get("wavlm"))
            results["teacher"] = train_stage(protocol, root / "1-teacher", model_options=model_options,
                                             budget=Budget.from_dict(self.teacher.get("budget")), progress=progress,
                                             task_options=self.teacher.get("task"), restart=restart)
        options = dict(self.prune)
        prune_budget = Budget.from_dict(options.pop("budget", None))
        task_options = options.pop("task", None)
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


def resolve_wavlm_option(wavlm):
    """`{preset: name, **overrides}` -> a config of `wavlm.presets`; anything else unchanged."""
    if isinstance(wavlm, Mapping) and "preset" in wavlm:
        options = dict(wavlm)
        name = options.pop("preset")
        builders = {"tiny": presets.tiny_config, "base_plus": presets.base_plus_config,
                    "large": presets.large_config}
        if name not in builders:
            raise ValueError(f"wavlm preset {name!r}: expected one of {sorted(builders)}.")
        if name == "tiny":
            return builders[name](**options)
        config = builders[name]()
        for key, value in options.items():
            setattr(config, key, value)
        return config
    return wavlm

