"""`export-onnx`: a segmentation checkpoint as an ONNX graph (optionally int8), checked."""

from __future__ import annotations

import argparse

from .arguments import add_input, add_output, add_trust_argument, non_negative_float, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input(parser, "checkpoint", name="the checkpoint",
              help="pyannote checkpoint of a WavLMSegmentation (pruned or not), or a directory "
                   "holding pytorch_model.bin")
    add_output(parser, "--output", required=True, metavar="FILE", help=".onnx file to write")
    parser.add_argument("--int8", action="store_true",
                        help="quantise MatMul/Gemm weights to int8 (dynamic quantisation)")
    parser.add_argument("--opset", type=positive_int, default=None, help="ONNX opset (default 20)")
    parser.add_argument("--tolerance", type=non_negative_float, default=None,
                        help="largest accepted max abs difference with the torch model: on "
                             "log-probabilities for fp32 (default 1e-4), on probabilities "
                             "for int8 (default 0.1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    add_trust_argument(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..deploy.onnx import DEFAULT_OPSET
    from ..deploy.segmentation import export_onnx
    from ..models.loading import load_model

    # the checkpoint is never the output, even with --overwrite: the command line checked it
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise SystemExit(f"{output} exists: expected a new file (or --overwrite).")
    if output.is_dir():
        raise SystemExit(f"{output} is a directory: expected the path of an .onnx file.")
    model = load_model(args.checkpoint, "segmentation", strict=False)
    export = export_onnx(model, output, int8=args.int8, opset=args.opset or DEFAULT_OPSET,
                         tolerance=args.tolerance)
    print(f"{output}: {export.summary()}")
    return 0
