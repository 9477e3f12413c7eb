"""`average`: average checkpoints of one architecture."""

from __future__ import annotations

from ..recipe.averaging import average_checkpoints, selected_checkpoints
from .arguments import add_input, add_output, add_trust_argument


def add_arguments(parser):
    add_input(parser, "checkpoints", nargs="*", name="a checkpoint to average",
              help="checkpoints to average")
    # not dest "run": the command line keeps each sub-command's function there
    add_input(parser, "--run", dest="run_directory", metavar="DIRECTORY",
              help="a stage's checkpoints/ directory: average the epochs it selected")
    add_output(parser, "--output", required=True, help="averaged checkpoint to write")
    add_trust_argument(parser)


def run(args) -> int:
    paths = list(args.checkpoints)
    if args.run_directory:
        paths += selected_checkpoints(args.run_directory)
    if not paths:
        raise SystemExit("average: give checkpoints, or --run DIRECTORY.")
    print(average_checkpoints(paths, args.output))
    return 0
