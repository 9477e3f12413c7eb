"""The `pyannote-wavlm-prune` command line: one sub-command per stage of the method.

Each sub-command lives in its own module of `pyannote_wavlm_prune.commands`, which defines
`add_arguments(parser)` and `run(args) -> int`. Only the module of the sub-command being run
is imported, so that `--help` and light commands start fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .commands.arguments import HelpFormatter

# sub-command: (module of pyannote_wavlm_prune.commands, one-line help)
COMMANDS = {
    "quickstart": ("quickstart", "the whole method on a simulated corpus, offline, on a CPU"),
    "simulate": ("simulate", "build a simulated-conversation corpus as a pyannote protocol"),
    "train": ("train", "fine-tune a WavLMSegmentation for diarization (OUTPUT/model.ckpt)"),
    "prune": ("prune", "learn gates by distillation, average, prune (OUTPUT/pruned.ckpt)"),
    "distill": ("distill", "further distil a pruned model from its teacher (OUTPUT/model.ckpt)"),
    "finetune": ("finetune", "fine-tune a pruned model with a fresh back end (OUTPUT/model.ckpt)"),
    "average": ("average", "average checkpoints (given, or those a run selected) into one"),
    "recipe": ("recipe", "run or resume every stage from a recipe YAML file"),
    "export": ("export", "write a diarization pipeline directory (config.yaml + models)"),
    "import-diarizen": ("import_diarizen", "a DiariZen hub model as a pyannote 4 pipeline directory"),
    "optimize": ("optimize", "tune a pipeline's hyper-parameters on a development set"),
    "evaluate": ("evaluate", "DER (and its components), RTTM files and real-time factors"),
    "bench": ("bench", "segmentation speed, parameters and MACs of checkpoints, side by side"),
    "export-onnx": ("export_onnx", "a segmentation checkpoint as a checked ONNX graph (--int8)"),
}


def _selected(argv: list[str]) -> str | None:
    return next((token for token in argv if token in COMMANDS), None)


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyannote-wavlm-prune",
        description="WavLM segmentation for pyannote.audio, pruned by distillation.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    selected = _selected(argv)
    for name, (module_name, help_text) in COMMANDS.items():
        subparser = subparsers.add_parser(name, help=help_text, description=help_text,
                                          formatter_class=HelpFormatter)
        if name == selected:
            module = importlib.import_module(f"pyannote_wavlm_prune.commands.{module_name}")
            module.add_arguments(subparser)
            subparser.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    # nothing here may phone home unless the user asks for it
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
