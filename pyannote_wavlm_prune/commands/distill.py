"""`distill`: further distillation of a pruned model from its teacher."""

from __future__ import annotations

from ..recipe.stages import distill_stage
from .common import (
    add_budget_arguments,
    add_protocol_arguments,
    add_restart_argument,
    budget_from,
    get_protocol,
)


def add_arguments(parser):
    add_protocol_arguments(parser)
    parser.add_argument("--output", required=True, help="stage directory")
    parser.add_argument("--teacher", required=True, help="the unpruned teacher checkpoint")
    parser.add_argument("--student", required=True, help="the pruned checkpoint")
    add_budget_arguments(parser, max_epochs=10)
    add_restart_argument(parser)


def run(args) -> int:
    result = distill_stage(get_protocol(args), args.output, args.teacher, args.student,
                           budget=budget_from(args), progress=not args.no_progress,
                           restart=args.restart)
    print(result)
    return 0
