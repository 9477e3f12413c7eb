"""Arguments shared by the training sub-commands."""

from __future__ import annotations

import argparse

from ..recipe.stages import Budget


def add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", required=True,
                        help="pyannote.database protocol, e.g. Simulated.SpeakerDiarization.tiny")
    parser.add_argument("--database", action="append", default=[], metavar="YML",
                        help="database.yml to load (repeatable); defaults to pyannote's registry")


def get_protocol(args: argparse.Namespace):
    from ..data.protocols import get_protocol

    return get_protocol(args.database, args.protocol)


def add_restart_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--restart", action="store_true",
                        help="start over: remove what an earlier run of this stage wrote in "
                             "--output (needed when its options differ from this run's)")


def add_budget_arguments(parser: argparse.ArgumentParser, max_epochs: int = 10) -> None:
    group = parser.add_argument_group("training budget")
    group.add_argument("--max-epochs", type=int, default=max_epochs)
    group.add_argument("--max-steps", type=int, default=-1)
    group.add_argument("--limit-train-batches", type=int, default=None, help="batches per epoch")
    group.add_argument("--limit-val-batches", type=int, default=None)
    group.add_argument("--batch-size", type=int, default=32)
    group.add_argument("--duration", type=float, default=None, help="chunk duration (s)")
    group.add_argument("--k", type=int, default=5, help="best checkpoints averaged")
    group.add_argument("--patience", type=int, default=None, help="early stopping patience (epochs)")
    group.add_argument("--accelerator", default="auto", help="Lightning accelerator (cpu, gpu, auto)")
    group.add_argument("--devices", default="auto", help="Lightning devices (e.g. 2, or auto)")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def budget_from(args: argparse.Namespace) -> Budget:
    devices = args.devices
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    return Budget(
        max_epochs=args.max_epochs, max_steps=args.max_steps,
        limit_train_batches=args.limit_train_batches, limit_val_batches=args.limit_val_batches,
        k=args.k, patience=args.patience, batch_size=args.batch_size, duration=args.duration,
        trainer={"accelerator": args.accelerator, "devices": devices},
    )
