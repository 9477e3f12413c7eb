"""`prune`: DistillPrune a teacher to a target sparsity, then remove what the gates closed."""

from __future__ import annotations

from ..recipe import prune_stage
from .common import add_budget_arguments, add_protocol_arguments, budget_from, get_protocol


def add_arguments(parser):
    add_protocol_arguments(parser)
    parser.add_argument("--output", required=True, help="stage directory")
    parser.add_argument("--teacher", required=True, help="fine-tuned WavLMSegmentation checkpoint")
    parser.add_argument("--sparsity", type=float, default=0.8)
    parser.add_argument("--objective", choices=["params", "macs"], default="params")
    parser.add_argument("--warmup-epochs", type=float, default=5.0)
    parser.add_argument("--tolerance", type=float, default=0.01,
                        help="epochs whose pruned sparsity is at least SPARSITY - TOLERANCE are averaged")
    parser.add_argument("--stop-at-target", action="store_true",
                        help="stop once the pruned structure reaches SPARSITY - TOLERANCE")
    add_budget_arguments(parser, max_epochs=30)


def run(args) -> int:
    result = prune_stage(get_protocol(args), args.output, args.teacher, sparsity=args.sparsity,
                         objective=args.objective, warmup_epochs=args.warmup_epochs,
                         tolerance=args.tolerance, stop_at_target=args.stop_at_target,
                         budget=budget_from(args), progress=not args.no_progress)
    print(result)
    return 0
