"""Embeddings per chunk against pyannote's path, and each embedding runtime, on trained models.

On the quickstart's test set (its 6 simulated conversations) and pyannote's sample recording,
with the quickstart's pruned segmentation model (`make quickstart` first):

1. **Same result.** Our SpeakerDiarization (embeddings per chunk: one frame-wise pass per
   chunk with an active speaker, none for silent speakers) against pyannote 4's own class
   with the same models and parameters (tests/helpers.py `pyannote_s_own`: one pass of the whole
   embedding model per (chunk, speaker) pair), for two pipelines: the quickstart's tuned
   one (its x-vector, agglomerative clustering, embeddings from non-overlapped frames) and
   one with a WeSpeaker ResNet34 (pyannote's hub architecture) trained here on the
   quickstart's embedding corpus, tuned on the development set. Per file: whether every
   segment and label is the same, the largest difference between the two paths' (chunk,
   speaker) embeddings relative to their largest magnitude, whether their NaN rows (speakers
   pyannote leaves without an embedding) are the same, and the embedding passes of each.
2. **Accuracy of the embedding runtimes.** DER (collar 0) of the ResNet34 pipeline on the
   test set with each `embedding_runtime` (torch, onnxruntime, onnxruntime-int8), and the
   DER of its segmentation alone (OracleClustering), which no embedding changes.

    python benchmarks/bench_embedding_paths.py [--quickstart quickstart] [--output bench-embeddings]
    python benchmarks/bench_embedding_paths.py --no-resnet    # part 1, the x-vector pipeline only

The ResNet34 and its tuned pipeline are written under --output (reused when there).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from pyannote.audio import Audio
from pyannote.core import Segment

from pyannote_wavlm_prune.deploy.runtime import EMBEDDING_RUNTIMES
from pyannote_wavlm_prune.pipelines import (
    evaluate_pipeline,
    export_pipeline,
    get_files,
    load_pipeline,
    optimize_pipeline,
)
from pyannote_wavlm_prune.pipelines.embedding_training import train_embedding
from pyannote_wavlm_prune.recipe.quickstart import real_recording

# the tests' counterpart of a pipeline: pyannote's class with its models and settings
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from helpers import pyannote_s_own  # noqa: E402


class Embeddings:
    """Pipeline hook keeping the (chunk, speaker, dimension) embeddings of the last file."""

    def __init__(self):
        self.value = None

    def __call__(self, step_name, step_artifact, file=None, total=None, completed=None):
        if step_name == "embeddings":
            self.value = np.asarray(step_artifact)


class Passes:
    """Waveforms (or chunks of frames) through the embedding model's first layer."""

    def __init__(self, model: torch.nn.Module):
        self.count = 0
        layer = model.resnet.conv1 if hasattr(model, "resnet") else model.tdnns[0]
        layer.register_forward_pre_hook(self._count)

    def _count(self, module, inputs):
        self.count += inputs[0].shape[0]


def compare(pipeline, files: list[dict]) -> list[dict]:
    """Ours (per chunk) against pyannote's class (per pair), file by file."""
    theirs = pyannote_s_own(pipeline)
    assert pipeline.embedding_path == "per-chunk", pipeline.embedding_path
    # pyannote's wrapper finds its shortest input by probing the model on first use: not a pass
    _ = pipeline._embedding.min_num_samples, theirs._embedding.min_num_samples
    passes = Passes(pipeline._embedding.model_)
    rows = []
    for file in files:
        mine, other = Embeddings(), Embeddings()
        before = passes.count
        ours = pipeline(file, hook=mine)
        ours_passes = passes.count - before
        before = passes.count
        pyannote = theirs(file, hook=other)
        pyannote_passes = passes.count - before
        # ours is cropped at the file's end; pyannote's last chunk is zero-padded past it
        within = Segment(0.0, Audio().get_duration(file))
        same = all(getattr(ours, key) == getattr(pyannote, key).crop(within, mode="intersection")
                   for key in ("speaker_diarization", "exclusive_speaker_diarization"))
        a, b = mine.value, other.value
        nan_a, nan_b = np.isnan(a).any(axis=-1), np.isnan(b).any(axis=-1)
        finite = ~nan_a & ~nan_b
        scale = np.abs(b[finite]).max() if finite.any() else 1.0
        difference = np.abs(a[finite] - b[finite]).max() / scale if finite.any() else 0.0
        rows.append({"uri": file["uri"], "same": bool(same), "segments": len(ours.speaker_diarization),
                     "speakers": len(ours.speaker_diarization.labels()),
                     "relative_difference": float(difference),
                     "same_nan_rows": bool(np.array_equal(nan_a, nan_b)),
                     "nan_rows": int(nan_b.sum()), "pairs": int(nan_b.size),
                     "passes_ours": ours_passes, "passes_pyannote": pyannote_passes})
    return rows


def resnet_pipeline(quickstart: Path, output: Path, protocol, iterations: int, epochs: int) -> Path:
    """A pipeline of the quickstart's pruned segmentation and a ResNet34 trained here."""
    from pyannote_wavlm_prune.data.simulate import get_protocol

    results = json.loads((quickstart / "results.json").read_text())
    embedding = output / "resnet34.ckpt"
    if not embedding.exists():
        voices = get_protocol(Path(results["embedding"]["corpus"]).parent)
        train_embedding(voices, checkpoint=embedding, architecture="wespeaker-resnet34",
                        max_epochs=epochs)
    tuned = output / "pipeline-resnet34"
    if not (tuned / "config.yaml").exists():
        untuned = output / ".untuned-resnet34"
        config = load_pipeline(quickstart / "pipeline-pruned")
        export_pipeline(untuned, results["checkpoints"]["pruned"], embedding, overwrite=True,
                        segmentation_step=config.segmentation_step, embedding_batch_size=16,
                        embedding_exclude_overlap=True)
        optimize_pipeline(untuned, get_files(protocol, "development"), output=tuned,
                          num_iterations=iterations, show_progress=False, overwrite=True)
    return tuned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quickstart", type=Path, default=Path("quickstart"),
                        help="the quickstart's output directory (default: quickstart)")
    parser.add_argument("--corpus", type=Path, default=Path("data/simulated/quickstart"),
                        help="the quickstart's corpus (default: data/simulated/quickstart)")
    parser.add_argument("--output", type=Path, default=Path("bench-embeddings"),
                        help="where the ResNet34 and its pipeline go (default: bench-embeddings)")
    parser.add_argument("--iterations", type=int, default=10,
                        help="tuning trials of the ResNet34 pipeline (default: 10, as the quickstart)")
    parser.add_argument("--no-resnet", action="store_true",
                        help="only the quickstart's x-vector pipeline: no ResNet34 (whose "
                             "training is the slow part on a CPU) and no embedding runtimes")
    parser.add_argument("--epochs", type=int, default=4,
                        help="training epochs of the ResNet34 (default: 4, as the quickstart's x-vector)")
    arguments = parser.parse_args()
    from pyannote_wavlm_prune.data.simulate import get_protocol

    protocol = get_protocol(arguments.corpus)
    test = get_files(protocol, "test") + [real_recording()]
    pipelines = {"quickstart (x-vector)": arguments.quickstart / "pipeline-pruned"}
    if not arguments.no_resnet:
        pipelines["ResNet34"] = resnet_pipeline(arguments.quickstart, arguments.output, protocol,
                                                arguments.iterations, arguments.epochs)

    print("Embeddings per chunk (ours) against per (chunk, speaker) pair (pyannote 4.0.7's "
          "class), same models and parameters\n")
    print("| pipeline | file | same diarization | segments | speakers | max embedding "
          "difference (relative) | same NaN rows | NaN rows / pairs | passes ours / "
          "pyannote's |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, directory in pipelines.items():
        for row in compare(load_pipeline(directory), test):
            print(f"| {name} | {row['uri']} | {'yes' if row['same'] else 'NO'} | "
                  f"{row['segments']} | {row['speakers']} | {row['relative_difference']:.1e} | "
                  f"{'yes' if row['same_nan_rows'] else 'NO'} | "
                  f"{row['nan_rows']} / {row['pairs']} | "
                  f"{row['passes_ours']} / {row['passes_pyannote']} |", flush=True)

    if arguments.no_resnet:
        return
    resnet = pipelines["ResNet34"]
    files = get_files(protocol, "test")
    oracle = evaluate_pipeline(load_pipeline(resnet, clustering="OracleClustering"), files,
                               progress=False)
    print(f"\nDER (%), collar 0, {len(files)} test files, ResNet34 pipeline; segmentation "
          f"alone (OracleClustering): {100 * oracle.der:.2f}\n")
    print("| embedding runtime | DER | change (points) | missed | false alarm | confusion |")
    print("| --- | --- | --- | --- | --- | --- |")
    reference = None
    for runtime in EMBEDDING_RUNTIMES:
        report = evaluate_pipeline(load_pipeline(resnet, embedding_runtime=runtime), files,
                                   progress=False)
        reference = report.der if reference is None else reference
        total = report.reference
        print(f"| {runtime} | {100 * report.der:.2f} | {100 * (report.der - reference):+.2f} | "
              f"{100 * report.missed / total:.2f} | {100 * report.false_alarm / total:.2f} | "
              f"{100 * report.confusion / total:.2f} |", flush=True)


if __name__ == "__main__":
    main()
