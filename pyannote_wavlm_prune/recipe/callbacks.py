"""Lightning callbacks of the recipe: early stopping after a warm-up, stopping at a target."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

import lightning
import torch
from lightning.pytorch.callbacks import EarlyStopping

from ..files import write_atomically, write_json_atomically
from ..tasks import DistillPrune


class EarlyStoppingAfter(EarlyStopping):
    """EarlyStopping that starts watching at epoch `start_epoch` (after a warm-up)."""

    def __init__(self, start_epoch: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.start_epoch = start_epoch

    def on_validation_end(self, trainer, pl_module):
        if trainer.current_epoch >= self.start_epoch:
            super().on_validation_end(trainer, pl_module)


class StopAtTargetSparsity(lightning.Callback):
    """Stops a DistillPrune run once its sparsity is at the target

    After the warm-up, training stops when, for `patience` consecutive steps,

    - measure="expected": the expected sparsity (the objective the multipliers act on) is
      within `tolerance` of the target;
    - measure="pruned": the exact sparsity of what `prune` would make now (eval-mode
      gates, `DistillPrune.pruned_sparsity`) is at least the target minus `tolerance`.
      One-sided, because this sparsity moves by whole units: one head of a small WavLM
      is a few per cent of it, so a two-sided window can be jumped over.

    Useful to end a pruning phase as soon as its structure is found (then distil it
    further), and in short runs, where the multipliers swing the sparsity past the target.

    Parameters
    ----------
    tolerance : float, optional
        Defaults to 0.01.
    patience : int, optional
        Consecutive steps at the target. Defaults to 20.
    measure : {"expected", "pruned"}, optional
        Defaults to "expected".
    """

    MEASURES = ("expected", "pruned")

    def __init__(self, tolerance: float = 0.01, patience: int = 20,
                 measure: Literal["expected", "pruned"] = "expected"):
        if measure not in self.MEASURES:
            raise ValueError(f"measure={measure!r}: expected one of {self.MEASURES}.")
        if tolerance < 0 or patience < 1:
            raise ValueError(f"tolerance={tolerance}, patience={patience}: expected tolerance >= 0 "
                             "and patience >= 1.")
        self.tolerance = tolerance
        self.patience = patience
        self.measure = measure
        self.steps_on_target = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        task = pl_module.task
        if not isinstance(task, DistillPrune):
            raise ValueError("StopAtTargetSparsity watches DistillPrune runs only.")
        if pl_module.global_step < task.num_warmup_steps():
            return
        if self.measure == "pruned":
            on_target = task.sparsity_margin() >= -self.tolerance
        else:
            with torch.no_grad():
                on_target = all(
                    abs(float(task.expected_sparsity(module=module)) - target) <= self.tolerance
                    for module, target in task.reachable_targets.items())
        self.steps_on_target = self.steps_on_target + 1 if on_target else 0
        if self.steps_on_target >= self.patience:
            trainer.should_stop = True

    def state_dict(self) -> dict:
        return {"steps_on_target": self.steps_on_target}

    def load_state_dict(self, state_dict: dict) -> None:
        self.steps_on_target = state_dict.get("steps_on_target", 0)


class SparsityTrajectory(lightning.Callback):
    """Records a DistillPrune run's sparsity, step by step, as JSON and as a plot

    Each step: the target, the expected sparsity of both metrics, the sparsity of the
    structure `prune()` would make now, and the controller's state (the multipliers, or the
    projection's offset). Written to `directory`/sparsity.json and sparsity.png at the end of
    each epoch and of training (atomically); kept in Lightning checkpoints, so that a resumed
    run's record is whole.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.points: list[dict] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        point = getattr(pl_module.task, "trajectory_point", None)
        if point is not None and (not self.points or point["step"] > self.points[-1]["step"]):
            # what is not defined (nothing the task logs now) is recorded as null, not NaN
            self.points.append({name: value if not isinstance(value, float) or math.isfinite(value)
                                else None for name, value in point.items()})

    def on_train_epoch_end(self, trainer, pl_module):
        self.write()

    def on_train_end(self, trainer, pl_module):
        self.write()

    def state_dict(self) -> dict:
        return {"points": self.points}

    def load_state_dict(self, state_dict: dict) -> None:
        self.points = list(state_dict.get("points", []))

    def write(self) -> None:
        """sparsity.json and sparsity.png in `directory` (nothing before the first step)."""
        if not self.points:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        write_json_atomically(self.directory / "sparsity.json", self.points)
        plot_trajectory(self.points, self.directory / "sparsity.png")


def plot_trajectory(points: list[dict], path: str | os.PathLike, title: str | None = None) -> Path:
    """Sparsity (target, expected, pruned) and controller state against the step, as a PNG."""
    import matplotlib  # heavy and only needed here

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [point["step"] for point in points]

    def values(name: str) -> list[float]:
        return [math.nan if p.get(name) is None else p[name] for p in points]

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True,
                                         gridspec_kw={"height_ratios": [2, 1]})
    if "target" in points[0]:
        top.plot(steps, values("target"), color="black", linestyle="--", label="target")
    for name, style in (("expected_params", "-"), ("expected_macs", ":")):
        if name in points[0]:
            top.plot(steps, values(name), style, color="#1f77b4", label=name.replace("_", " "))
    top.plot(steps, values("pruned"), color="#d62728", label="pruned structure")
    modules = [name[len("target_"):] for name in points[0] if name.startswith("target_")]
    for module, color in zip(modules, ("#2ca02c", "#9467bd", "#8c564b", "#e377c2")):
        top.plot(steps, values(f"target_{module}"), color=color, linestyle="--",
                 label=f"target {module}")
        top.plot(steps, values(f"pruned_{module}"), color=color, label=f"pruned {module}")
    top.set_ylabel("sparsity")
    top.legend(loc="lower right", fontsize=8)
    if title:
        top.set_title(title)
    for name in ("lambda1", "lambda2", "shift", *(f"shift_{module}" for module in modules)):
        if name in points[0]:
            bottom.plot(steps, values(name), label=name.replace("_", " "))
    bottom.set_xlabel("step")
    bottom.set_ylabel("controller")
    bottom.legend(loc="upper right", fontsize=8)
    return save_figure(figure, path, dpi=90)


def save_figure(figure, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Save a matplotlib figure next to `path`, rename it into place, and close it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    path = Path(path)
    try:
        return write_atomically(
            path, lambda file: figure.savefig(file, format=path.suffix.lstrip("."), dpi=dpi))
    finally:
        plt.close(figure)
