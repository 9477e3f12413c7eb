"""`prune`: DistillPrune a teacher to a target sparsity, then remove what the gates closed."""

from __future__ import annotations

import argparse

from .arguments import (
    Default,
    SparsityTargets,
    add_input,
    add_trust_argument,
    non_negative_float,
    non_negative_int,
    resolve_defaults,
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
from .distill import DISTILL_OPTIONS, TASKS, add_distillation_arguments

DISTILL_PRUNE = f"{TASKS}:DistillPrune"
PRUNE_STAGE = "pyannote_wavlm_prune.recipe.stages:prune_stage"

# options of DistillPrune this command sets (those of Distill included)
TASK_OPTIONS = ("sparsity", "objective", "warmup_epochs", "warmup_steps", "units", "controller",
                "decay", *DISTILL_OPTIONS)
# options of prune_stage
STAGE_OPTIONS = ("tolerance", "exact", "stop_at_target", "student")


def add_arguments(parser):
    add_protocol_arguments(parser)
    add_stage_output(parser)
    add_input(parser, "--teacher", required=True, help="fine-tuned WavLMSegmentation checkpoint")
    add_input(parser, "--student", help="the model to prune, distilled from the teacher "
                                        "(default: the teacher), e.g. the distilled model of an "
                                        "earlier round, to prune progressively")
    group = parser.add_argument_group("pruning (DistillPrune)")
    group.add_argument("--sparsity", action=SparsityTargets,
                       default=Default(DISTILL_PRUNE, "sparsity"),
                       help="target sparsity in (0, 1), relative to the unpruned architecture; "
                            "module-wise: MODULE=SPARSITY pairs, modules cnn and transformer, "
                            "or cnn, heads and ffn (e.g. cnn=0.5 transformer=0.8)")
    group.add_argument("--objective", choices=["params", "macs"],
                       default=Default(DISTILL_PRUNE, "objective"),
                       help="what the sparsity counts: WavLM parameters, or MACs per chunk")
    group.add_argument("--warmup-epochs", type=non_negative_float, default=Default(DISTILL_PRUNE, "warmup_epochs"),
                       help="epochs of the target's linear warm-up")
    group.add_argument("--warmup-steps", type=non_negative_int, default=None,
                       help="the warm-up in optimisation steps (default: --warmup-epochs decides)")
    group.add_argument("--units", nargs="+", default=Default(DISTILL_PRUNE, "units"),
                       help="gated unit kinds, some of the library's registry (wavlm.UNITS); "
                            "an unknown one is refused, naming them")
    group.add_argument("--controller", choices=["projection", "lagrangian"],
                       default=Default(DISTILL_PRUNE, "controller"),
                       help="how the sparsity follows the target")
    group.add_argument("--decay", action=argparse.BooleanOptionalAction,
                       default=Default(DISTILL_PRUNE, "decay"),
                       help="decay the learning rates linearly to 0 after the warm-up")
    group.add_argument("--exact", action=argparse.BooleanOptionalAction,
                       default=Default(PRUNE_STAGE, "exact"),
                       help="finish exactly at the budget (--no-exact: prune by the gates alone)")
    group.add_argument("--tolerance", type=non_negative_float, default=Default(PRUNE_STAGE, "tolerance"),
                       help="epochs whose pruned sparsity is at least SPARSITY - TOLERANCE are "
                            "averaged")
    group.add_argument("--stop-at-target", action=argparse.BooleanOptionalAction,
                       default=Default(PRUNE_STAGE, "stop_at_target"),
                       help="stop once the pruned structure reaches SPARSITY - TOLERANCE")
    add_distillation_arguments(parser, task="DistillPrune")
    add_budget_arguments(parser, max_epochs=30)
    add_restart_argument(parser)
    add_trust_argument(parser)


def run(args) -> int:
    args = resolve_defaults(args)  # the library's defaults, read from it now
    from ..models.loading import load_model
    from ..recipe.stages import prune_stage

    result = prune_stage(get_protocol(args), args.output, args.teacher,
                         task_options=options_from(args, TASK_OPTIONS), budget=budget_from(args),
                         progress=not args.no_progress, restart=args.restart,
                         **options_from(args, STAGE_OPTIONS))
    print(result)
    pruned = load_model(result, "pruned")
    num_samples = round(pruned.specifications.duration * pruned.hparams.sample_rate)
    print(pruned.structure.summary(num_samples))
    report = result.parent / "pruning.json"
    if report.is_file():
        import json

        modules = json.loads(report.read_text()).get("sparsity")
        if isinstance(modules, dict):  # module-wise targets: each module's own
            print("module sparsities: " + ", ".join(f"{module} {value:.4f}"
                                                    for module, value in modules.items()))
    return 0
