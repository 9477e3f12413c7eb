"""Lightning callbacks of the recipe: early stopping after a warm-up, stopping at a target."""

from __future__ import annotations

from typing import Literal

import lightning
import torch
from lightning.pytorch.callbacks import EarlyStopping

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
            on_target = task.pruned_sparsity() >= task.sparsity - self.tolerance
        else:
            with torch.no_grad():
                on_target = abs(float(task.expected_sparsity()) - task.sparsity) <= self.tolerance
        self.steps_on_target = self.steps_on_target + 1 if on_target else 0
        if self.steps_on_target >= self.patience:
            trainer.should_stop = True

    def state_dict(self) -> dict:
        return {"steps_on_target": self.steps_on_target}

    def load_state_dict(self, state_dict: dict) -> None:
        self.steps_on_target = state_dict.get("steps_on_target", 0)
