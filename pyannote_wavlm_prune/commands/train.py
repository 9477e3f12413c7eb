"""`train`: fine-tune a WavLMSegmentation (the teacher) on a protocol."""

from __future__ import annotations

import argparse

from .arguments import (
    Default,
    KeyValues,
    LearningRates,
    add_input,
    add_trust_argument,
    non_negative_float,
    non_negative_int,
    positive_int,
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

MODEL = "pyannote_wavlm_prune.models.wavlm_segmentation:WavLMSegmentation"
TASK = "pyannote_wavlm_prune.recipe.training:diarization_task"

# options of WavLMSegmentation this command sets. Not here: structure, gates and
# gates_objective (a teacher is whole: `prune` removes units), sample_rate and num_channels
# (16 kHz mono), task (the stage's).
MODEL_OPTIONS = ("wavlm", "freeze_wavlm", "cnn_gradient_scale", "projection", "conformer",
                 "learning_rate", "variant")
# the names of `frontends.variants.VARIANTS` (not imported: the command line starts without torch)
VARIANT_NAMES = ("default", "diarizen")
# options of `diarization_task` (duration and batch_size: the training budget's)
TASK_OPTIONS = ("max_speakers_per_chunk", "num_workers")


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `diarization_task` beyond the training budget's."""
    group = parser.add_argument_group("diarization task")
    group.add_argument("--max-speakers-per-chunk", type=positive_int,
                       default=Default(TASK, "max_speakers_per_chunk"),
                       help="speakers of a chunk the powerset classes cover")
    group.add_argument("--num-workers", type=non_negative_int, default=Default(TASK, "num_workers"),
                       help="data loading processes (0: in-process)")


def add_arguments(parser):
    add_protocol_arguments(parser)
    add_stage_output(parser)
    group = parser.add_argument_group("model (WavLMSegmentation)")
    # an input when it is a local directory (a hub name or preset:NAME is left alone)
    add_input(group, "--wavlm", default=Default(f"{MODEL}.WAVLM_DEFAULT"),
                       help="pretrained front end (WavLM, HuBERT or wav2vec 2.0): a Hugging Face "
                            "name (needs the hub or its cache), a local directory, or "
                            "preset:tiny|base_plus|large for a random WavLM that needs nothing "
                            "(preset:tiny to try it offline)")
    group.add_argument("--freeze-wavlm", action=argparse.BooleanOptionalAction,
                       default=Default(MODEL, "freeze_wavlm"), help="train the back end only")
    group.add_argument("--cnn-gradient-scale", type=non_negative_float,
                       default=Default(MODEL, "cnn_gradient_scale"),
                       help="gradient scale of WavLM's CNN feature encoder")
    group.add_argument("--projection", action=KeyValues, default=Default(f"{MODEL}.PROJECTION_DEFAULTS"),
                       help="projection after WavLM; keys not given keep their default")
    group.add_argument("--conformer", action=KeyValues, default=Default(f"{MODEL}.CONFORMER_DEFAULTS"),
                       help="Conformer back end; keys not given keep their default")
    group.add_argument("--learning-rate", action=LearningRates,
                       default=Default(f"{MODEL}.LEARNING_RATE_DEFAULTS"),
                       help="AdamW learning rates of WavLM and of the back end")
    group.add_argument("--variant", choices=VARIANT_NAMES, default=Default(MODEL, "variant"),
                       help="numerics where implementations differ: this project's (default) "
                            "or DiariZen's (diarizen)")
    add_task_arguments(parser)
    add_budget_arguments(parser, max_epochs=20)
    add_restart_argument(parser)
    add_trust_argument(parser)


def run(args) -> int:
    args = resolve_defaults(args)  # the library's defaults, read from it now
    from ..recipe.run import resolve_wavlm_option
    from ..recipe.stages import train_stage

    model_options = options_from(args, MODEL_OPTIONS)
    if args.wavlm.startswith("preset:"):
        model_options["wavlm"] = resolve_wavlm_option({"preset": args.wavlm.split(":", 1)[1]})
    result = train_stage(get_protocol(args), args.output, model_options=model_options,
                         task_options=options_from(args, TASK_OPTIONS), budget=budget_from(args),
                         progress=not args.no_progress, restart=args.restart)
    print(result)
    return 0
