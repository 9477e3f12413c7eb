"""Arguments shared by the training sub-commands."""

from __future__ import annotations

import argparse

from .arguments import (
    Default,
    add_input,
    add_output,
    non_negative_int,
    number,
    positive_float,
    positive_int,
)

BUDGET = "pyannote_wavlm_prune.recipe.stages:Budget"


def add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", required=True,
                        help="pyannote.database protocol, e.g. Simulated.SpeakerDiarization.tiny")
    add_database_argument(parser, help="database.yml to load (repeatable), e.g. the one "
                                       "`simulate` writes in its corpus; defaults to pyannote's "
                                       "registry")


def add_database_argument(container, help: str = "database.yml to load (repeatable)") -> None:
    add_input(container, "--database", action="append", default=[], metavar="YML", help=help)


# what a stage writes into its directory, or removes from it on --restart
STAGE_OUTPUTS = "pyannote_wavlm_prune.recipe.record:STAGE_OUTPUTS"


def add_stage_output(parser: argparse.ArgumentParser) -> None:
    add_output(parser, "--output", required=True, writes=STAGE_OUTPUTS, help="stage directory")


def get_protocol(args: argparse.Namespace):
    from ..data.protocols import get_protocol

    return get_protocol(args.database, args.protocol)


def add_restart_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--restart", action="store_true",
                        help="start over: remove what an earlier run of this stage wrote in "
                             "--output (needed when its options differ from this run's)")


def add_budget_arguments(parser: argparse.ArgumentParser, max_epochs: int = 10) -> None:
    """The options of `recipe.stages.Budget` (this command's own `max_epochs`)."""
    group = parser.add_argument_group("training budget")
    group.add_argument("--max-epochs", type=positive_int, default=max_epochs,
                       help="Lightning's max_epochs")
    group.add_argument("--max-steps", type=number(int, 1, special=[-1],
                                                  expected="a positive integer or -1"),
                       default=Default(BUDGET, "max_steps"),
                       help="Lightning's max_steps (-1: no limit); a stage keeps only epochs "
                            "that ended, so allow at least one")
    group.add_argument("--limit-train-batches", type=positive_int, default=None,
                       help="batches per epoch (default: pyannote's epoch, as long as the "
                            "training set)")
    group.add_argument("--limit-val-batches", type=positive_int, default=None,
                       help="validation batches (default: the whole development set)")
    group.add_argument("--batch-size", type=positive_int, default=Default(BUDGET, "batch_size"),
                       help="chunks per training batch")
    group.add_argument("--duration", type=positive_float, default=None,
                       help="chunk duration in seconds (default: 8 for a new model, the "
                            "teacher's when distilling)")
    group.add_argument("--k", type=positive_int, default=Default(BUDGET, "k"),
                       help="best checkpoints averaged")
    group.add_argument("--patience", type=non_negative_int, default=None,
                       help="early stopping patience in epochs (default: no early stopping)")
    group.add_argument("--accelerator", default="auto", help="Lightning accelerator (cpu, gpu, auto)")
    group.add_argument("--devices", default="auto", help="Lightning devices (e.g. 2, or auto)")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def budget_from(args: argparse.Namespace):
    from ..recipe.stages import Budget

    devices = args.devices
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    return Budget(
        max_epochs=args.max_epochs, max_steps=args.max_steps,
        limit_train_batches=args.limit_train_batches, limit_val_batches=args.limit_val_batches,
        k=args.k, patience=args.patience, batch_size=args.batch_size, duration=args.duration,
        trainer={"accelerator": args.accelerator, "devices": devices},
    )


def options_from(args: argparse.Namespace, names) -> dict:
    """{name: args.name} for the library options `names` (None: the library decides)."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}
