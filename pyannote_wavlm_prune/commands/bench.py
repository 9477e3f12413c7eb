"""`bench`: segmentation inference speed, size and MACs of checkpoints, side by side."""

from __future__ import annotations

import argparse

from .arguments import Default, add_trust_argument, resolve_defaults

BENCH = "pyannote_wavlm_prune.pipelines.bench:bench_segmentation"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", nargs="+", help="segmentation checkpoints; the first is "
                                                       "the reference of the ratios")
    parser.add_argument("--duration", type=float, default=Default(BENCH, "chunk_duration"),
                        help="chunk duration (s)")
    parser.add_argument("--batch-size", type=int, default=Default(BENCH, "batch_size"),
                        help="chunks per batch")
    parser.add_argument("--repeats", type=int, default=Default(BENCH, "repeats"),
                        help="timed batches per model (median kept)")
    parser.add_argument("--warmup", type=int, default=Default(BENCH, "warmup"),
                        help="untimed batches first")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's setting)")
    parser.add_argument("--device", default=Default(BENCH, "device"), help="torch device")
    parser.add_argument("--json", metavar="FILE", help="write the figures here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_trust_argument(parser)


def run(args: argparse.Namespace) -> int:
    args = resolve_defaults(args)  # the library's defaults, read from it now
    import json

    from ..pipelines.bench import bench_segmentation, bench_table

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
        with open(args.json, "w") as file:
            json.dump([result.to_dict() for result in results], file, indent=2)
    return 0
