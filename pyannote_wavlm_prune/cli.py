"""The `pyannote-wavlm-prune` command line: one sub-command per stage of the method.

Each sub-command lives in its own module of `pyannote_wavlm_prune.commands`, which defines
`HELP` (one line), `add_arguments(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# sub-command name -> module of pyannote_wavlm_prune.commands
COMMANDS = {
    "quickstart": "quickstart",
    "train": "train",
    "prune": "prune",
    "distill": "distill",
    "finetune": "finetune",
    "average": "average",
    "recipe": "recipe",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyannote-wavlm-prune",
        description="WavLM segmentation for pyannote.audio, pruned by distillation.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"pyannote_wavlm_prune.commands.{module_name}")
        subparser = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(subparser)
        subparser.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    # nothing here may reach a hub or phone home unless the user asks for it
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
