"""`distill`: further distillation of a pruned model from its teacher."""

from __future__ import annotations

import argparse

from .arguments import (
    Default,
    LearningRates,
    add_input,
    add_trust_argument,
    non_negative_float,
    non_negative_int,
    positive_int,
    resolve_defaults,
    train_files,
)
from .common import (
    add_budget_arguments,
    add_protocol_arguments,
    add_restart_argument,
    add_stage_output,
    budget_from,
    get_protocol,
    options_from,
)

TASKS = "pyannote_wavlm_prune.tasks.distill_prune"

# options of `Distill` this command sets; the stage sets duration (--duration) and batch_size
# (--batch-size); validation is on, the stage selecting its checkpoints with it
DISTILL_OPTIONS = ("distilled_layers", "l1_weight", "cosine_weight", "learning_rate", "seed",
                   "max_speakers_per_chunk", "num_workers", "train_files")


def add_distillation_arguments(parser: argparse.ArgumentParser, task: str = "Distill") -> None:
    """The options of `Distill` (shared by DistillPrune), defaults read from `task`."""
    target = f"{TASKS}:{task}"
    group = parser.add_argument_group(f"distillation ({task})")
    group.add_argument("--distilled-layers", type=non_negative_int, nargs="+", metavar="INDEX", default=None,
                       help="hidden states distilled, 0 = input of layer 1 (default: the input "
                            "and every third layer, e.g. 0 4 8 12 for Base+)")
    group.add_argument("--l1-weight", type=non_negative_float, default=Default(f"{TASKS}:Distill", "l1_weight"),
                       help="weight of the L1 part of the distillation loss")
    group.add_argument("--cosine-weight", type=non_negative_float,
                       default=Default(f"{TASKS}:Distill", "cosine_weight"),
                       help="weight of the cosine part of the distillation loss")
    group.add_argument("--learning-rate", action=LearningRates,
                       default=Default(f"{target}.LEARNING_RATE_DEFAULTS"),
                       help="AdamW learning rates, by parameter group; groups not given keep "
                            "their default")
    group.add_argument("--seed", type=int, default=Default(f"{TASKS}:Distill", "seed"),
                       help="seed of the per-step random state (gate samples, dropout)")
    group.add_argument("--max-speakers-per-chunk", type=positive_int, default=None,
                       help="(default: the teacher's, so that the student keeps its classifier)")
    group.add_argument("--train-files", type=train_files, default=None,
                       help="train on part of the training files: a fraction in (0, 1] "
                            "(e.g. 0.25) or a number of files (e.g. 10), drawn reproducibly "
                            "with --seed (default: all)")
    group.add_argument("--num-workers", type=non_negative_int, default=Default(f"{TASKS}:Distill", "num_workers"),
                       help="data loading processes (0: in-process)")


def add_arguments(parser):
    add_protocol_arguments(parser)
    add_stage_output(parser)
    add_input(parser, "--teacher", required=True, help="the unpruned teacher checkpoint")
    add_input(parser, "--student", required=True, help="the pruned checkpoint")
    add_distillation_arguments(parser)
    add_budget_arguments(parser, max_epochs=10)
    add_restart_argument(parser)
    add_trust_argument(parser)


def run(args) -> int:
    args = resolve_defaults(args)  # the library's defaults, read from it now
    from ..recipe.stages import distill_stage

    result = distill_stage(get_protocol(args), args.output, args.teacher, args.student,
                           task_options=options_from(args, DISTILL_OPTIONS),
                           budget=budget_from(args), progress=not args.no_progress,
                           restart=args.restart)
    print(result)
    return 0
