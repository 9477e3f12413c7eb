"""`bench`: segmentation inference speed, size and MACs of checkpoints, side by side."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", nargs="+", help="segmentation checkpoints; the first is "
                                                       "the reference of the ratios")
    parser.add_argument("--duration", type=float, default=8.0, help="chunk duration (s)")
    parser.add_argument("--batch-size", type=int, default=8, help="chunks per batch")
    parser.add_argument("--repeats", type=int, default=5, help="timed batches (median kept)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed batches first")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", metavar="FILE", help="write the figures here")


def run(args: argparse.Namespace) -> int:
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
    )
    print(bench_table(results))
    if args.json:
        with open(args.json, "w") as file:
            json.dump([result.to_dict() for result in results], file, indent=2)
    return 0
