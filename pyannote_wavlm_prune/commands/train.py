"""`train`: fine-tune a WavLMSegmentation (the teacher) on a protocol."""

from __future__ import annotations

from ..recipe.run import resolve_wavlm_option
from ..recipe.stages import train_stage
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
    parser.add_argument("--wavlm", default="microsoft/wavlm-base-plus",
                        help="model name, local directory, or preset:tiny|base_plus|large")
    parser.add_argument("--freeze-wavlm", action="store_true")
    add_budget_arguments(parser, max_epochs=20)
    add_restart_argument(parser)


def run(args) -> int:
    wavlm = args.wavlm
    if wavlm.startswith("preset:"):
        wavlm = resolve_wavlm_option({"preset": wavlm.split(":", 1)[1]})
    result = train_stage(get_protocol(args), args.output,
                         model_options={"wavlm": wavlm, "freeze_wavlm": args.freeze_wavlm},
                         budget=budget_from(args), progress=not args.no_progress,
                         restart=args.restart)
    print(result)
    return 0
