"""`prune`: DistillPrune a teacher to a target sparsity, then remove what the gates closed."""

from __future__ import annotations

import inspect

from ..recipe.stages import prune_stage
from ..tasks import DistillPrune
from .common import (
    add_budget_arguments,
    add_protocol_arguments,
    add_restart_argument,
    budget_from,
    get_protocol,
)

# options of DistillPrune this command sets; unset, the task's own defaults apply
TASK_OPTIONS = ("sparsity", "objective", "warmup_epochs", "controller")


def _default(name: str, function=DistillPrune.__init__):
    return inspect.signature(function).parameters[name].default


def add_arguments(parser):
    add_protocol_arguments(parser)
    parser.add_argument("--output", required=True, help="stage directory")
    parser.add_argument("--teacher", required=True, help="fine-tuned WavLMSegmentation checkpoint")
    parser.add_argument("--sparsity", type=float,
                        help=f"target sparsity in (0, 1) (default: {_default('sparsity')})")
    parser.add_argument("--objective", choices=["params", "macs"],
                        help=f"what the sparsity counts (default: {_default('objective')})")
    parser.add_argument("--warmup-epochs", type=float,
                        help=f"epochs of the target's linear warm-up (default: "
                             f"{_default('warmup_epochs')})")
    parser.add_argument("--controller", choices=["projection", "lagrangian"],
                        help="how the sparsity follows the target (default: "
                             f"{_default('controller')})")
    parser.add_argument("--no-exact", action="store_true",
                        help="prune by the gates alone, without finishing exactly at the budget")
    parser.add_argument("--tolerance", type=float, default=_default("tolerance", prune_stage),
                        help="epochs whose pruned sparsity is at least SPARSITY - TOLERANCE are "
                             "averaged (default: %(default)s)")
    parser.add_argument("--stop-at-target", action="store_true",
                        help="stop once the pruned structure reaches SPARSITY - TOLERANCE")
    add_budget_arguments(parser, max_epochs=30)
    add_restart_argument(parser)


def run(args) -> int:
    options = {name: getattr(args, name) for name in TASK_OPTIONS if getattr(args, name) is not None}
    result = prune_stage(get_protocol(args), args.output, args.teacher, tolerance=args.tolerance,
                         exact=not args.no_exact, stop_at_target=args.stop_at_target,
                         budget=budget_from(args), progress=not args.no_progress,
                         restart=args.restart, **options)
    print(result)
    report = result.parent / "pruning.json"
    if report.is_file():
        print(report.read_text())
    return 0
