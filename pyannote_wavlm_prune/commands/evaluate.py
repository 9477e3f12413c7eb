"""`evaluate`: DER (missed speech, false alarm, confusion) and real-time factors on a protocol.

A file that cannot be diarized (unreadable, NaN samples, ...) is named on stderr, in one line,
and left out of the totals; the others are scored. Exit status 1 when some file failed.
"""

from __future__ import annotations

import argparse

from .arguments import add_input, add_output, add_trust_argument, non_negative_float, ratio
from .common import add_database_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input(parser, "pipeline", name="the pipeline",
              help="pipeline directory (or config.yaml), or a segmentation checkpoint "
                   "(scored with OracleClustering)")
    parser.add_argument("--protocol", required=True, help="pyannote.database protocol")
    add_database_argument(parser)
    parser.add_argument("--subset", default="test", choices=["train", "development", "test"],
                        help="files scored")
    parser.add_argument("--collar", type=non_negative_float, default=0.0,
                        help="forgiveness collar in seconds")
    parser.add_argument("--skip-overlap", action="store_true", help="do not score overlaps")
    parser.add_argument("--oracle-clustering", action="store_true",
                        help="group speakers with the reference: scores the segmentation alone")
    parser.add_argument("--num-speakers", choices=["auto", "oracle"], default="auto",
                        help="give the pipeline the reference number of speakers (oracle)")
    parser.add_argument("--segmentation-step", type=ratio, default=None,
                        help="override the sliding window step, a ratio of its duration "
                             "(default: the pipeline's)")
    # the files' names are the protocol's: only the folder itself is known here
    add_output(parser, "--rttm", metavar="DIR", writes=(),
               help="write one <uri>.rttm per file here")
    add_output(parser, "--json", metavar="FILE", help="write per-file and total figures here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_trust_argument(parser)


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from ..files import finite_or_none, write_json_atomically
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
        keep_going=True,  # one bad file: the others are still scored, and it is named
    )
    if report.files:
        print(report.table())
    if args.json:
        # atomic, strict JSON (NaN as null); a full disk is said as such
        write_json_atomically(args.json, finite_or_none(report.to_dict()))
    # one line per file that failed; the others are scored above
    for failure in report.failed:
        print(f"pyannote-wavlm-prune evaluate: error: {failure.uri}: {failure.error}",
              file=sys.stderr)
    return 1 if report.failed else 0
