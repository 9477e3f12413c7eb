"""`average`: average checkpoints of one architecture."""

from __future__ import annotations

from ..recipe.averaging import average_checkpoints, selected_checkpoints
from .arguments import add_trust_argument


def add_arguments(parser):
    parser.add_argument("checkpoints", nargs="*", help="checkpoints to average")
    # not dest "run": the command line keeps each sub-command's function there
    parser.add_argument("--run", dest="run_directory", metavar="DIRECTORY",
                        help="a stage's checkpoints/ directory: average the epochs it selected")
    parser.add_argument("--output", required=True, help="averaged checkpoint to write")
    add_trust_argument(parser)


def run(args) -> int:
    paths = list(args.checkpoints)
    if args.run_directory:
        paths += selected_checkpoints(args.run_directory)
    if not paths:
        raise SystemExit("average: give checkpoints, or --run DIRECTORY.")
    print(average_checkpoints(paths, args.output))
    return 0
