"""Would chunks of several files sharing model batches make `pipeline([files])` faster?

pyannote's batch convention (`pipeline([file, ...])` calls the pipeline's `apply_batch`) lets a
pipeline fill its model batches with the chunks of several files, instead of ending each
file with a partial batch (and, in pyannote's sliding window, its last padded chunk alone).
This measures what that saves on the two model steps of the pipeline, over the chunks of
FILES one-minute files (8 s windows, step 0.8 s: 66 chunks a file):

- segmentation: the Base+ WavLMSegmentation pruned to REFERENCE_BASE_PLUS_S80 (random weights);
- embeddings: the frame-wise trunk of pyannote's WeSpeaker ResNet34 (random weights), one
  pass per chunk, as the per-chunk embedding path runs it.

"per file" runs each file's chunks in batches of B as pyannote's Inference slides them;
"shared" runs all files' chunks in consecutive batches of B. Same chunks, same models. The two
take turns of one file's worth of chunks each (a load that comes and goes on a shared machine
falls on both alike); a row gives the round with the fastest per-file time, and the ratio
taken within that round.

    python benchmarks/bench_batch.py [--files 20] [--batch-sizes 8 32] [--rounds 2]
        [--steps segmentation embedding]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_pipeline import audio, wespeaker_resnet34  # noqa: E402
from bench_pruned_wavlm import _segmentation  # noqa: E402

from pyannote_wavlm_prune.frontends import REFERENCE_BASE_PLUS_S80  # noqa: E402

SAMPLE_RATE = 16000
WINDOW, STEP = 8.0, 0.8


def file_chunks(waveform: torch.Tensor) -> list[torch.Tensor]:
    """(chunks, 1, samples) batches as pyannote's Inference.slide makes them: the complete
    chunks, then the last incomplete one zero-padded, alone."""
    size, step = int(WINDOW * SAMPLE_RATE), round(STEP * SAMPLE_RATE)
    chunks = waveform.unfold(1, size, step).permute(1, 0, 2)
    pieces = [chunks]
    if (waveform.shape[1] - size) % step > 0:
        last = waveform[:, chunks.shape[0] * step:]
        pieces.append(torch.nn.functional.pad(last, (0, size - last.shape[1]))[None])
    return pieces


def batches_per_file(files: list[list[torch.Tensor]], size: int) -> list[list[torch.Tensor]]:
    """Each file's batches, as pyannote's Inference makes them file by file."""
    return [[piece[i:i + size] for piece in pieces for i in range(0, piece.shape[0], size)]
            for pieces in files]


def batches_shared(files: list[list[torch.Tensor]], size: int) -> list[torch.Tensor]:
    every = torch.cat([piece for pieces in files for piece in pieces])
    return [every[i:i + size] for i in range(0, every.shape[0], size)]


def interleaved_seconds(model, own: list[list[torch.Tensor]],
                        shared: list[torch.Tensor]) -> tuple[float, float]:
    """Seconds of the per-file and the shared batches, run in turns of one file's worth each
    (file i's batches, then the i-th of as many equal slices of the shared batches), so that
    a load that comes and goes on a shared machine falls on both alike."""
    turns, times = len(own), [0.0, 0.0]
    for i in range(turns):
        times[0] += seconds(model, own[i])
        times[1] += seconds(model, shared[round(i * len(shared) / turns):
                                          round((i + 1) * len(shared) / turns)])
    return times[0], times[1]


def seconds(model, batches: list[torch.Tensor]) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            model(batch)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=20, help="one-minute files (default 20)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--rounds", type=int, default=2, help="alternations per row")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", nargs="+", choices=["segmentation", "embedding"],
                        default=["segmentation", "embedding"], help="rows to run (default both)")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)

    # files of different starts in the sample, so that no two are the same audio
    sample = audio(1.0 + arguments.files / 60)["waveform"]
    files = [file_chunks(sample[:, i * SAMPLE_RATE:(i + 60) * SAMPLE_RATE])
             for i in range(arguments.files)]
    models = {}
    if "segmentation" in arguments.steps:
        models["segmentation (s80)"] = _segmentation(REFERENCE_BASE_PLUS_S80)
    if "embedding" in arguments.steps:
        models["embedding trunk (ResNet34)"] = wespeaker_resnet34().forward_frames
    print(f"{arguments.files} one-minute files, {sum(p.shape[0] for f in files for p in f)} "
          f"chunks of {WINDOW:g} s, {arguments.threads} threads, torch {torch.__version__}")
    print("| step | batch | calls per file / shared | per file (s) | shared (s) | "
          "shared / per file |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, model in models.items():
        for size in arguments.batch_sizes:
            own, shared = batches_per_file(files, size), batches_shared(files, size)
            seconds(model, shared[:1])  # warm-up
            a, b = min(interleaved_seconds(model, own, shared)
                       for _ in range(arguments.rounds))
            calls = sum(len(batches) for batches in own)
            print(f"| {name} | {size} | {calls} / {len(shared)} | {a:.1f} | {b:.1f} | "
                  f"{b / a:.3f} |", flush=True)


if __name__ == "__main__":
    main()
