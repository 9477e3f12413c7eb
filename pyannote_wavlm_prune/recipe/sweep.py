"""A sweep: from one teacher, a grid of strategies x objectives x targets (x training-data
shares), cell by cell, resumable, into one table and one plot (Han et al.'s study, in kind).

    pyannote-wavlm-prune sweep recipe.yml     # a recipe with a `sweep:` section

Each cell runs the recipe's prune (with the cell's strategy, objective, target and data
share), distill and finetune stages in `experiment`/cells/<cell>/, then measures the model:
sparsity reached (parameters and MACs), WavLM parameters, MACs per second of audio, CPU
speed-up over the teacher (`pipelines.segmentation_bench.bench_segmentation`, one run per
cell, on this machine) and, unless `der: false`, DER on the test set with oracle clustering (the
segmentation alone) and of the pipeline tuned on the development set. A cell's row is written
(`row.json`) once it is whole: an interrupted sweep, run again, skips the finished cells and
resumes the interrupted one at its stage.

Strategies, for a target t:

- overall: one target for the whole front end (`DistillPrune(sparsity=t)`);
- module-wise: one target for each module, the CNN and the transformer, the same for both
  and such that the front end's combined sparsity is t (`sparsity={cnn: u, transformer: u}`,
  u = t / the share of the front end these modules hold, `frontends.cost.prunable_share`);
- progressive: the targets t/n, 2t/n, ..., t in n rounds (`progressive_prune_stage`; n =
  `rounds`, default 2), distilled between rounds.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files import write_atomically, write_json_atomically
from .callbacks import save_figure

STRATEGIES = ("overall", "module-wise", "progressive")
# the sweep section's keys, their types and defaults
SWEEP_DEFAULTS: dict[str, Any] = {
    "strategies": ["overall"],
    "objectives": ["params"],
    "targets": [0.8],
    "train_files": [None],
    "grids": None,                # several grids (each some of the four lists above)
    "rounds": 2,
    "der": True,
    "embedding": None,            # a speaker-embedding checkpoint; None: trained once
    "embedding_epochs": 4,
    "optimize_iterations": 10,
    "evaluate_step": 0.25,
    "bench_repeats": 3,
}
GRID_KEYS = ("strategies", "objectives", "targets", "train_files")
SWEEP_HINTS = {"strategies": list, "objectives": list, "targets": list, "train_files": list,
               "grids": list | None, "rounds": int, "der": bool, "embedding": str | None, "embedding_epochs": int,
               "optimize_iterations": int, "evaluate_step": float, "bench_repeats": int}


@dataclass(frozen=True)
class Cell:
    """One point of the grid."""

    strategy: str
    objective: str
    target: float
    train_files: float | int | None = None

    @property
    def name(self) -> str:
        """Its folder: e.g. overall-params-s80, progressive-macs-s90-d0.25."""
        name = f"{self.strategy}-{self.objective}-s{100 * self.target:g}"
        return name if self.train_files is None else f"{name}-d{self.train_files:g}"

    def prune_options(self, rounds: int = 2, share: float = 1.0) -> dict[str, Any]:
        """The prune stage's options of this cell (`sparsity`, or `schedule`, and the rest)

        share: of the front end's cost (in the objective) that the CNN and transformer
        modules hold; module-wise targets are the cell's target over it (at most 0.999).
        """
        options: dict[str, Any] = {"objective": self.objective}
        if self.strategy == "overall":
            options["sparsity"] = self.target
        elif self.strategy == "module-wise":
            each = min(round(self.target / share, 6), 0.999)
            options["sparsity"] = {"cnn": each, "transformer": each}
        else:
            options["schedule"] = [self.target * (i + 1) / rounds for i in range(rounds)]
        if self.train_files is not None:
            options["train_files"] = self.train_files
        return options


def check_sweep(section: Mapping[str, Any] | None) -> dict[str, Any]:
    """The sweep section with its defaults, checked (one-line ValueErrors naming the value)."""
    from ..options import check_options

    check_options("sweep", section, SWEEP_HINTS)
    settings = {**SWEEP_DEFAULTS, **dict(section or {})}
    grids = settings["grids"]
    if grids is not None and not grids:
        raise ValueError("sweep.grids=[]: expected at least one grid, or no grids key.")
    for index, grid in enumerate(grids or []):
        check_options(f"sweep.grids[{index}]", grid, {key: list for key in GRID_KEYS})
    for where, grid in [("sweep", settings)] + [(f"sweep.grids[{index}]", {**settings, **grid})
                                                for index, grid in enumerate(grids or [])]:
        _check_grid(where, grid)
    for name in ("rounds", "embedding_epochs", "bench_repeats"):
        if settings[name] < 1:
            raise ValueError(f"sweep.{name}={settings[name]}: expected a positive integer.")
    if settings["optimize_iterations"] < 0 or not settings["evaluate_step"] > 0:
        raise ValueError(f"sweep.optimize_iterations={settings['optimize_iterations']}, "
                         f"evaluate_step={settings['evaluate_step']}: expected >= 0 and > 0.")
    return settings


def _check_grid(where: str, grid: Mapping[str, Any]) -> None:
    from ..data.protocols import check_train_files

    for name in GRID_KEYS:
        if not grid[name]:
            raise ValueError(f"{where}.{name}=[]: expected at least one value.")
    for strategy in grid["strategies"]:
        if strategy not in STRATEGIES:
            raise ValueError(f"{where}.strategies: {strategy!r}: expected some of {list(STRATEGIES)}.")
    for objective in grid["objectives"]:
        if objective not in ("params", "macs"):
            raise ValueError(f"{where}.objectives: {objective!r}: expected params and/or macs.")
    for target in grid["targets"]:
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target < 1:
            raise ValueError(f"{where}.targets: {target!r}: expected sparsities in (0, 1).")
    for share in grid["train_files"]:
        check_train_files(share)


def sweep_cells(settings: Mapping[str, Any]) -> list[Cell]:
    """The cells of the grid (strategies, then objectives, targets and data shares), or of each
    of `grids` in turn (keys not given: the section's), each cell once."""
    cells: list[Cell] = []
    for grid in settings.get("grids") or [{}]:
        grid = {**settings, **grid}
        for cell in (Cell(strategy, objective, float(target), share)
                     for strategy in grid["strategies"] for objective in grid["objectives"]
                     for target in grid["targets"] for share in grid["train_files"]):
            if cell not in cells:
                cells.append(cell)
    return cells


def run_sweep(recipe, progress: bool = True, restart: bool = False) -> list[dict]:
    """Run (or resume) the sweep of `recipe` (a `Recipe` with a `sweep` section); return its rows

    Writes `experiment`/sweep.json (the rows), sweep.txt (the table, in Markdown) and
    sweep.png (DER against MACs per second and against speed-up, the Pareto front marked).
    """
    from tqdm.auto import tqdm

    settings = check_sweep(recipe.sweep)
    cells = sweep_cells(settings)
    recipe.validate()
    started = time.monotonic()
    protocol = recipe.get_protocol()
    restart = "changed" if restart else False
    root = Path(recipe.experiment)
    teacher = recipe.teacher_checkpoint(protocol, progress, restart)
    embedding = _embedding(settings, protocol, root, progress) if settings["der"] else None

    rows = [_row(root / "teacher", lambda: measure(teacher, teacher, protocol, embedding,
                                                   root / "teacher", settings, progress),
                 {"cell": "teacher", "strategy": "teacher", "objective": None, "target": 0.0,
                  "train_files": None})]
    bar = tqdm(cells, desc="sweep cells", unit="cell", disable=not progress)
    for cell in bar:
        bar.set_postfix_str(cell.name)
        directory = root / "cells" / cell.name
        rows.append(_row(directory, lambda cell=cell, directory=directory: _run_cell(
            recipe, cell, settings, protocol, teacher, embedding, directory, progress, restart),
            {"cell": cell.name, "strategy": cell.strategy, "objective": cell.objective,
             "target": cell.target, "train_files": cell.train_files}))
    write_json_atomically(root / "sweep.json", {"rows": rows,
                                                "minutes": (time.monotonic() - started) / 60})
    write_atomically(root / "sweep.txt", lambda file: file.write(sweep_table(rows).encode()))
    plot_sweep(rows, root / "sweep.png")
    return rows


def _row(directory: Path, compute, identity: dict) -> dict:
    """The cell's row: read from `directory`/row.json if the cell is done, else computed."""
    path = directory / "row.json"
    if path.is_file():
        return json.loads(path.read_text())
    row = {**identity, **compute()}
    directory.mkdir(parents=True, exist_ok=True)
    write_json_atomically(path, row)
    return row


def _run_cell(recipe, cell: Cell, settings, protocol, teacher: Path, embedding, directory: Path,
              progress: bool, restart) -> dict:
    from .stages import Budget, distill_stage, finetune_stage, progressive_prune_stage, prune_stage

    options = {key: value for key, value in recipe.prune.items() if key not in ("sparsity", "schedule")}
    budget = Budget.from_dict(options.pop("budget", None))
    task_options = {key: value for key, value in dict(options.pop("task", None) or {}).items()
                    if key not in ("sparsity", "objective", "train_files")}
    options = {key: value for key, value in options.items() if key not in ("objective", "train_files")}
    options.update(cell.prune_options(settings["rounds"], _share(teacher, cell.objective, budget)))
    distill_task = dict(recipe.distill.get("task") or {})
    if cell.train_files is not None:
        distill_task["train_files"] = cell.train_files
    distill_budget = Budget.from_dict(recipe.distill.get("budget"))
    if cell.strategy == "progressive":
        pruned = progressive_prune_stage(
            protocol, directory / "2-prune", teacher, options.pop("schedule"),
            distill={"budget": distill_budget, "task_options": distill_task},
            task_options=task_options, budget=budget, progress=progress, restart=restart, **options)
    else:
        pruned = prune_stage(protocol, directory / "2-prune", teacher, task_options=task_options,
                             budget=budget, progress=progress, restart=restart, **options)
    distilled = distill_stage(protocol, directory / "3-distill", teacher, pruned,
                              task_options=distill_task, budget=distill_budget,
                              progress=progress, restart=restart)
    final = finetune_stage(protocol, directory / "4-finetune", distilled,
                           budget=Budget.from_dict(recipe.finetune.get("budget")),
                           fresh_back_end=recipe.finetune.get("fresh_back_end", True),
                           progress=progress, task_options=recipe.finetune.get("task"),
                           restart=restart, learning_rate=recipe.finetune.get("learning_rate"))
    return measure(final, teacher, protocol, embedding, directory, settings, progress)


def _share(teacher: Path, objective: str, budget) -> float:
    """The share of the teacher's front end (cost in `objective`) the CNN and transformer
    modules hold, for chunks of the prune stage's duration (the teacher's by default)."""
    from ..frontends.cost import prunable_share
    from ..models.loading import load_model

    model = load_model(teacher, "teacher")
    duration = budget.duration or model.specifications.duration
    samples = round(duration * model.hparams.sample_rate) if objective == "macs" else None
    return prunable_share(model.frontend.config, ("cnn", "transformer"), objective, samples)


def _embedding(settings, protocol, root: Path, progress: bool) -> Path:
    """The speaker embedding of every cell's pipeline: given, or trained once."""
    if settings["embedding"] is not None:
        return Path(settings["embedding"])
    from ..pipelines.embedding_training import train_embedding

    embedding = root / "embedding.ckpt"
    if not embedding.is_file():
        train_embedding(protocol, checkpoint=embedding, max_epochs=settings["embedding_epochs"],
                        trainer_options={"enable_progress_bar": progress, "logger": False,
                                         "enable_model_summary": False})
    return embedding


def measure(model: str | os.PathLike, teacher: str | os.PathLike, protocol, embedding,
            directory: Path, settings: Mapping[str, Any], progress: bool = True) -> dict:
    """A sweep row's measurements of the segmentation checkpoint `model` (see module docstring)."""
    import torch

    from ..frontends.gating import frontend_structure
    from ..models.loading import load_model
    from ..pipelines.segmentation_bench import bench_segmentation

    loaded = load_model(model, "model")
    structure = frontend_structure(loaded.frontend)
    chunk = round(loaded.specifications.duration * loaded.hparams.sample_rate)
    second = loaded.hparams.sample_rate
    speed = bench_segmentation([teacher, model], chunk_duration=8.0, batch_size=4,
                               repeats=settings["bench_repeats"],
                               num_threads=torch.get_num_threads())[1]
    row = {
        "sparsity_params": structure.sparsity("params"),
        "sparsity_macs": structure.sparsity("macs", chunk),
        "wavlm_params": structure.params(),
        # per second of audio, counted on 8 s chunks (attention is quadratic in the length)
        "wavlm_gmacs_per_second": structure.macs(8 * second) / 8 / 1e9,
        "speedup": speed.speedup,
        "structure": structure.to_dict(),
    }
    if settings["der"]:
        row.update(_der(model, protocol, embedding, directory, settings, progress))
    return row


def _der(model, protocol, embedding, directory: Path, settings, progress: bool) -> dict:
    """DER % on the test set: oracle clustering, and the pipeline tuned on the development set."""
    from ..pipelines.evaluate import evaluate_pipeline, get_files
    from ..pipelines.export import export_pipeline, load_pipeline
    from ..pipelines.optimize import optimize_pipeline

    untuned, tuned = directory / "pipeline-untuned", directory / "pipeline"
    if not (untuned / "config.yaml").is_file():
        export_pipeline(untuned, model, embedding, overwrite=True,
                        segmentation_step=settings["evaluate_step"], embedding_batch_size=16,
                        embedding_exclude_overlap=True)
    if not (tuned / "config.yaml").is_file():
        if settings["optimize_iterations"]:
            optimize_pipeline(untuned, get_files(protocol, "development"), output=tuned,
                              num_iterations=settings["optimize_iterations"],
                              show_progress=progress)
        else:
            tuned = untuned
    test = get_files(protocol, "test")
    oracle = evaluate_pipeline(load_pipeline(untuned, clustering="OracleClustering"), test,
                               progress=progress, description="oracle clustering")
    pipeline = evaluate_pipeline(load_pipeline(tuned), test, progress=progress,
                                 description="pipeline")
    return {"der_oracle": 100 * oracle.der, "der_pipeline": 100 * pipeline.der}


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """Which points no other beats on both coordinates (both to be minimised), ties kept."""
    return [not any(other[0] <= point[0] and other[1] <= point[1] and other != point
                    for other in points) for point in points]


def _front(rows: list[dict], cost) -> list[bool]:
    """Pareto front of DER (pipeline's, else oracle's) against `cost(row)` (minimised)."""
    points = [(cost(row), _der_of(row)) for row in rows]
    defined = [not any(math.isnan(value) for value in point) for point in points]
    front = pareto_front([point for point, ok in zip(points, defined, strict=True) if ok])
    marks = iter(front)
    return [next(marks) if ok else False for ok in defined]


def _der_of(row: dict) -> float:
    value = row.get("der_pipeline", row.get("der_oracle"))
    return math.nan if value is None else float(value)


def sweep_table(rows: list[dict]) -> str:
    """The sweep's table (markdown), Pareto-optimal cells (DER against MACs) in bold."""
    front = _front(rows, lambda row: row["wavlm_gmacs_per_second"])
    der = "der_pipeline" in rows[0]
    lines = ["| cell | sparsity (params) | sparsity (MACs) | WavLM params | WavLM GMACs / s "
             "| CPU speed-up |" + (" DER oracle (%) | DER pipeline (%) |" if der else ""),
             "| --- | --- | --- | --- | --- | --- |" + (" --- | --- |" if der else "")]
    for row, best in zip(rows, front, strict=True):
        name = f"**{row['cell']}**" if best else row["cell"]
        line = (f"| {name} | {row['sparsity_params']:.3f} | {row['sparsity_macs']:.3f} | "
                f"{row['wavlm_params'] / 1e6:.3f} M | {row['wavlm_gmacs_per_second']:.4g} | "
                f"{row['speedup']:.2f}x |")
        if der:
            line += f" {row['der_oracle']:.1f} | {row['der_pipeline']:.1f} |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def plot_sweep(rows: list[dict], path: str | os.PathLike) -> Path:
    """DER against WavLM MACs per second and against CPU speed-up, the Pareto front marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    panels = (("wavlm_gmacs_per_second", "WavLM GMACs per second", lambda r: r["wavlm_gmacs_per_second"]),
              ("speedup", "CPU speed-up over the teacher", lambda r: -r["speedup"]))
    strategies = sorted({row["strategy"] for row in rows})
    markers = dict(zip(strategies, "os^Dv<>", strict=False))
    for axis, (key, label, cost) in zip(axes, panels, strict=True):
        front = _front(rows, cost)
        for strategy in strategies:
            chosen = [row for row in rows if row["strategy"] == strategy]
            axis.scatter([row[key] for row in chosen], [_der_of(row) for row in chosen],
                         marker=markers[strategy], label=strategy)
        best = sorted((row[key], _der_of(row)) for row, on in zip(rows, front, strict=True) if on)
        if best:
            axis.plot(*zip(*best), color="black", linestyle="--", linewidth=1, marker="o",
                      markerfacecolor="none", markersize=12, label="Pareto front")
        axis.set_xlabel(label)
        axis.set_ylabel("DER (%)")
    axes[0].legend(fontsize=8)
    return save_figure(figure, path)
