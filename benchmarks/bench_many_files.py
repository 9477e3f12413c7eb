"""`diarize` over many files: the command's own time, start and resume, 100 to 10,000 files.

What the command does around the pipeline, which grows with the number of files: finding
them, checking every output against every input (no output may replace or enter one),
recording its options, writing one RTTM per file and, on a re-run, skipping the files
already done. The pipeline is a stub that returns an empty diarization at once, so that only
the command is timed: "start" is a first run into an empty output directory (it diarizes and
writes every file), "resume" a second run of the same command (every file skipped). Files
are empty .wav files in one directory (found by name; the stub reads none).

    python benchmarks/bench_many_files.py [--files 100 1000 10000]

Run with another checkout's package on PYTHONPATH, it times that checkout's command.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path
from unittest import mock

from pyannote.core import Annotation


class StubPipeline:
    """Loads at once, diarizes at once: an empty diarization of any file."""

    def to(self, device):
        return self

    def __call__(self, file, **kwargs):
        return Annotation(uri=file["uri"])


def timed_run(pipeline: Path, recordings: Path, output: Path) -> float:
    from pyannote_wavlm_prune.cli import main

    with mock.patch("pyannote_wavlm_prune.pipelines.load_pipeline",
                    lambda path: StubPipeline()), contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        status = main(["diarize", str(pipeline), str(recordings), "--output", str(output),
                       "--no-progress"])
        seconds = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"diarize exited {status}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, nargs="+", default=[100, 1000, 10000])
    args = parser.parse_args()
    print("| files | start (s) | resume (s) |")
    print("| --- | --- | --- |")
    for num_files in args.files:
        with tempfile.TemporaryDirectory() as scratch:
            scratch = Path(scratch)
            pipeline = scratch / "pipeline"
            pipeline.mkdir()
            (pipeline / "config.yaml").write_text("pipeline: {}\n")
            recordings = scratch / "recordings"
            recordings.mkdir()
            for index in range(num_files):
                (recordings / f"recording{index:05d}.wav").write_bytes(b"")
            output = scratch / "rttm"
            start = timed_run(pipeline, recordings, output)
            resume = timed_run(pipeline, recordings, output)
            print(f"| {num_files} | {start:.2f} | {resume:.2f} |", flush=True)


if __name__ == "__main__":
    main()
