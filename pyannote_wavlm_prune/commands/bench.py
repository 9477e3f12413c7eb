"""`bench`: segmentation inference speed, size and MACs of checkpoints, side by side."""

from __future__ import annotations

import argparse

from .arguments import (
    Default,
    add_input,
    add_output,
    add_trust_argument,
    non_negative_int,
    positive_float,
    positive_int,
    resolve_defaults,
)

BENCH = "pyannote_wavlm_prune.pipelines.segmentation_bench:bench_segmentation"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input(parser, "checkpoints", nargs="+", name="a checkpoint",
              help="segmentation checkpoints; the first is the reference of the ratios")
    parser.add_argument("--duration", type=positive_float, default=Default(BENCH, "chunk_duration"),
                        help="chunk duration (s)")
    parser.add_argument("--batch-size", type=positive_int, default=Default(BENCH, "batch_size"),
                        help="chunks per batch")
    parser.add_argument("--repeats", type=positive_int, default=Default(BENCH, "repeats"),
                        help="timed batches per model (median kept)")
    parser.add_argument("--warmup", type=non_negative_int, default=Default(BENCH, "warmup"),
                        help="untimed batches first")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch CPU threads (default: torch's setting)")
    parser.add_argument("--device", default=Default(BENCH, "device"), help="torch device")
    add_output(parser, "--json", metavar="FILE", help="write the figures here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_trust_argument(parser)


def run(args: argparse.Namespace) -> int:
    args = resolve_defaults(args)  # the library's defaults, read from it now
    from ..files import finite_or_none, write_json_atomically
    from ..pipelines.segmentation_bench import bench_segmentation, bench_table

    results = bench_segmentation(
        args.checkpoints,
        chunk_duration=args.duration,
        batch_size=args.batch_size,
        repeats=args.repeats,
        warmup=args.warmup,
        num_threads=args.threads,
        device=args.device,
        progress=not args.no_progress,
    )
    print(bench_table(results))
    if args.json:
        # atomic, strict JSON (NaN as null); a full disk is said as such
        write_json_atomically(args.json, finite_or_none([result.to_dict() for result in results]))
    return 0
