"""`import-diarizen`: a DiariZen hub repository as a pyannote 4 pipeline directory."""

from __future__ import annotations

import argparse

from .arguments import add_input, add_output, add_trust_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input(parser, "src", metavar="SRC", name="the DiariZen repository",
              help="directory of a DiariZen hub repository, or its hub name "
                   "(e.g. BUT-FIT/diarizen-wavlm-base-s80-md)")
    add_output(parser, "--output", required=True, metavar="DIR",
               help="pipeline directory to write (must not exist)")
    add_input(parser, "--embedding", metavar="EMB",
                        help="speaker embedding: a local pyannote checkpoint (copied) or a hub "
                             "name (default: pyannote/wespeaker-voxceleb-resnet34-LM)")
    add_input(parser, "--structure", metavar="FILE",
                        help="YAML or JSON WavLM structure ('family': base or large, "
                             "conv_channels, kept_heads, ffn_widths, ...) when config.toml's "
                             "wavlm_src is not a published name")
    parser.add_argument("--embedding-runtime", default=None,
                        choices=["torch", "onnxruntime", "onnxruntime-int8"],
                        help="how the pipeline runs its speaker embedding (config.yaml's "
                             "embedding_runtime, see export --embedding-runtime; default: as "
                             "the model is)")
    parser.add_argument("--pipeline", default="diarizen", choices=["diarizen", "pyannote"],
                        help="diarizen (default): compute what DiariZen's own pipeline "
                             "computes (its median filter, clean-frame rule, speaker bounds, "
                             "first channel, ...; see docs/diarizen.md); pyannote: pyannote "
                             "4's pipeline with DiariZen's models and hyper-parameters")
    add_trust_argument(parser)


def run(args: argparse.Namespace) -> int:
    from ..importers.diarizen import import_diarizen

    directory = import_diarizen(args.src, args.output, embedding=args.embedding,
                                structure=args.structure, embedding_runtime=args.embedding_runtime,
                                pipeline=args.pipeline)
    print(f"pipeline written to {directory}")
    return 0
