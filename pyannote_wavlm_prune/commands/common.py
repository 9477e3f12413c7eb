"""Arguments shared by the training sub-commands."""

from __future__ import annotations

import argparse

from .arguments import Default

BUDGET = "pyannote_wavlm_prune.recipe.stages:Budget"


def add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", required=True,
                        help="pyannote.database protocol, e.g. Simulated.SpeakerDiarization.tiny")
    parser.add_argument("--database", action="append", default=[], metavar="YML",
                        help="database.yml to load (repeatable), e.g. the one `simulate` writes "
                             "in its corpus; defaults to pyannote's registry")


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
    group.add_argument("--max-epochs", type=int, default=max_epochs, help="Lightning's max_epochs")
    group.add_argument("--max-steps", type=int, default=Default(BUDGET, "max_steps"),
                       help="Lightning's max_steps (-1: no limit); a stage keeps only epochs "
                            "that ended, so allow at least one")
    group.add_argument("--limit-train-batches", type=int, default=None,
                       help="batches per epoch (default: pyannote's epoch, as long as the "
                            "training set)")
    group.add_argument("--limit-val-batches", type=int, default=None,
                       help="validation batches (default: the whole development set)")
    group.add_argument("--batch-size", type=int, default=Default(BUDGET, "batch_size"),
                       help="chunks per training batch")
    group.add_argument("--duration", type=float, default=None,
                       help="chunk duration in seconds (default: 8 for a new model, the "
                            "teacher's when distilling)")
    group.add_argument("--k", type=int, default=Default(BUDGET, "k"),
                       help="best checkpoints averaged")
    group.add_argument("--patience", type=int, default=None,
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
