"""Orchestration of the method: training, the resumable stages, checkpoint selection and
averaging, callbacks, the YAML recipe and the quickstart.

    train (fine-tune the teacher) > prune (DistillPrune, average, prune) >
    distill (further distillation) > finetune > average
"""

from .averaging import KeepBestCheckpoints, average_checkpoints, selected_checkpoints
from .callbacks import EarlyStoppingAfter, StopAtTargetSparsity
from .run import Recipe
from .stages import (
    Budget,
    distill_stage,
    finetune_stage,
    progressive_prune_stage,
    prune_stage,
    train_stage,
    with_fresh_back_end,
)
from .training import diarization_task, trainer

__all__ = [
    "Budget",
    "EarlyStoppingAfter",
    "KeepBestCheckpoints",
    "Recipe",
    "StopAtTargetSparsity",
    "average_checkpoints",
    "diarization_task",
    "distill_stage",
    "finetune_stage",
    "progressive_prune_stage",
    "prune_stage",
    "selected_checkpoints",
    "train_stage",
    "trainer",
    "with_fresh_back_end",
]
