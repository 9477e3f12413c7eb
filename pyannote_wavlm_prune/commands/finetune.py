"""`finetune`: diarization fine-tuning of a (pruned) model, with a fresh back end by default."""

from __future__ import annotations

from .arguments import LearningRates, add_input, add_trust_argument, resolve_defaults
from .common import (
    add_budget_arguments,
    add_protocol_arguments,
    add_restart_argument,
    add_stage_output,
    budget_from,
    get_protocol,
    options_from,
)
from .train import TASK_OPTIONS, add_task_arguments


def add_arguments(parser):
    add_protocol_arguments(parser)
    add_stage_output(parser)
    add_input(parser, "--model", required=True, help="checkpoint whose WavLM is kept")
    parser.add_argument("--keep-back-end", action="store_true",
                        help="fine-tune the model's own back end rather than a fresh one "
                             "(default: a fresh back end)")
    parser.add_argument("--learning-rate", action=LearningRates, default=None,
                        help="AdamW learning rates, e.g. wavlm=2e-5 backend=1e-3 (default: the "
                             "model's own; keys not given keep theirs)")
    add_task_arguments(parser)
    add_budget_arguments(parser, max_epochs=10)
    add_restart_argument(parser)
    add_trust_argument(parser)


def run(args) -> int:
    args = resolve_defaults(args)  # the library's defaults, read from it now
    from ..recipe.stages import finetune_stage

    result = finetune_stage(get_protocol(args), args.output, args.model, budget=budget_from(args),
                            fresh_back_end=not args.keep_back_end, progress=not args.no_progress,
                            task_options=options_from(args, TASK_OPTIONS), restart=args.restart,
                            learning_rate=args.learning_rate)
    print(result)
    return 0
