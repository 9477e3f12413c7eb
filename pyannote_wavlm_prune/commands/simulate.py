"""`simulate`: build a simulated-conversation corpus as a pyannote.database protocol."""

from __future__ import annotations

from ..data.simulate import add_simulate_arguments, run_simulate


def add_arguments(parser):
    add_simulate_arguments(parser)
    parser.set_defaults(parser=parser)


def run(args) -> int:
    return run_simulate(args, args.parser)
