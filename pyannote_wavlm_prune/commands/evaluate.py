"""`evaluate`: DER (missed speech, false alarm, confusion) and real-time factors on a protocol."""

from __future__ import annotations

import argparse

from .arguments import add_trust_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pipeline",
                        help="pipeline directory (or config.yaml), or a segmentation checkpoint "
                             "(scored with OracleClustering)")
    parser.add_argument("--protocol", required=True, help="pyannote.database protocol")
    parser.add_argument("--database", action="append", default=[], metavar="YML",
                        help="database.yml to load (repeatable)")
    parser.add_argument("--subset", default="test", choices=["train", "development", "test"],
                        help="files scored")
    parser.add_argument("--collar", type=float, default=0.0,
                        help="forgiveness collar in seconds")
    parser.add_argument("--skip-overlap", action="store_true", help="do not score overlaps")
    parser.add_argument("--oracle-clustering", action="store_true",
                        help="group speakers with the reference: scores the segmentation alone")
    parser.add_argument("--num-speakers", choices=["auto", "oracle"], default="auto",
                        help="give the pipeline the reference number of speakers (oracle)")
    parser.add_argument("--segmentation-step", type=float, default=None,
                        help="override the sliding window step, a ratio of its duration "
                             "(default: the pipeline's)")
    parser.add_argument("--rttm", metavar="DIR", help="write one <uri>.rttm per file here")
    parser.add_argument("--json", metavar="FILE", help="write per-file and total figures here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_trust_argument(parser)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ..pipelines import SpeakerDiarization, load_pipeline
    from ..pipelines.evaluate import evaluate_pipeline, get_files
    from .common import get_protocol

    files = get_files(get_protocol(args), args.subset)

    overrides = {}
    if args.oracle_clustering:
        overrides["clustering"] = "OracleClustering"
    if args.segmentation_step is not None:
        overrides["segmentation_step"] = args.segmentation_step
    path = Path(args.pipeline)
    if path.is_file() and path.suffix not in (".yaml", ".yml"):
        # a bare segmentation checkpoint: nothing to cluster with but the reference
        pipeline = SpeakerDiarization(
            segmentation=str(path),
            clustering="OracleClustering",
            segmentation_step=overrides.get("segmentation_step", 0.1),
        )
        pipeline.instantiate(pipeline.default_parameters())
    else:
        pipeline = load_pipeline(path, **overrides)

    report = evaluate_pipeline(
        pipeline,
        files,
        collar=args.collar,
        skip_overlap=args.skip_overlap,
        num_speakers=args.num_speakers,
        rttm_dir=args.rttm,
        progress=not args.no_progress,
    )
    print(report.table())
    if args.json:
        with open(args.json, "w") as file:
            json.dump(report.to_dict(), file, indent=2)
    return 0
