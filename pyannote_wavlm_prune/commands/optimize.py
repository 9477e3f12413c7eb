"""`optimize`: tune a pipeline's hyper-parameters on a protocol subset, write the tuned one."""

from __future__ import annotations

import argparse

from .arguments import (
    Default,
    add_input,
    add_output,
    add_trust_argument,
    non_negative_float,
    positive_int,
    resolve_defaults,
)
from .common import add_database_argument

OPTIMIZE = "pyannote_wavlm_prune.pipelines.optimize:optimize_pipeline"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input(parser, "pipeline", name="the pipeline to tune",
              help="pipeline directory (or its config.yaml)")
    add_output(parser, "--output", required=True, help="tuned pipeline directory to write")
    parser.add_argument("--protocol", required=True, help="pyannote.database protocol")
    add_database_argument(parser)
    parser.add_argument("--subset", default="development",
                        choices=["train", "development", "test"], help="files tuned on")
    parser.add_argument("--iterations", type=positive_int, default=Default(OPTIMIZE, "num_iterations"),
                        help="number of trials")
    parser.add_argument("--num-speakers", choices=["auto", "oracle"],
                        default=Default(OPTIMIZE, "num_speakers"),
                        help="give the pipeline the reference number of speakers (oracle)")
    parser.add_argument("--seed", type=int, default=Default(OPTIMIZE, "seed"),
                        help="seed of the TPE sampler")
    # read to resume, and appended to: an output, that no input may be
    add_output(parser, "--journal", help="optuna journal file (.journal) to resume from")
    parser.add_argument("--study-name", default=Default(OPTIMIZE, "study_name"),
                        help="name of the study in --journal")
    parser.add_argument("--freeze-min-duration-off", type=non_negative_float, default=None, metavar="SECONDS",
                        help="keep segmentation.min_duration_off at this value (default: tuned)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_trust_argument(parser)


def run(args: argparse.Namespace) -> int:
    args = resolve_defaults(args)  # the library's defaults, read from it now
    from ..pipelines.evaluate import get_files
    from ..pipelines.optimize import optimize_pipeline
    from .common import get_protocol

    files = get_files(get_protocol(args), args.subset)
    freeze = None
    if args.freeze_min_duration_off is not None:
        freeze = {"segmentation": {"min_duration_off": args.freeze_min_duration_off}}
    result = optimize_pipeline(
        args.pipeline,
        files,
        output=args.output,
        num_iterations=args.iterations,
        seed=args.seed,
        num_speakers=args.num_speakers,
        freeze=freeze,
        journal=args.journal,
        study_name=args.study_name,
        show_progress=not args.no_progress,
        overwrite=args.overwrite,
        extra={"protocol": args.protocol, "subset": args.subset},
    )
    print(f"best DER {100 * result.loss:.2f} % after {result.num_trials} trials: {result.params}")
    print(f"tuned pipeline written to {result.directory}")
    return 0
