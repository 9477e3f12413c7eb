"""Real-time factor of the whole SpeakerDiarization pipeline as files grow, part by part.

pyannote's SpeakerDiarization pipeline, VBx clustering, rows of one table in one run:

- "pyannote-unpruned": pyannote 4.0.7's own class with the unpruned model (what a user has
  today): one pass of the whole embedding model per (chunk, local speaker) pair;
- ours (`pyannote_wavlm_prune.pipelines.SpeakerDiarization`), with the unpruned model or the
  one pruned to REFERENCE_BASE_PLUS_S80 ("s80"), embeddings per (chunk, speaker) pair
  ("-per-pair", pyannote's path) or per chunk (the default), with a segmentation runtime
  ("-ort-int8": ONNX Runtime int8) and an embedding runtime ("+emb-ort", "+emb-ort-int8").

Models: segmentation WavLMSegmentation (Base+ config, Conformer back end, powerset over 4
speakers), random weights whose classifier favours (bias + 2) silence, local speakers 1 and 2
and their overlap: decisions change from frame to frame, two local speakers per chunk are
active, with overlap, and two are silent, as in a two-speaker conversation (the plain random
model activates all four in every chunk); the binarised segmentation's activity is printed
(active pairs, chunks with an active speaker). Embedding:
pyannote's WeSpeaker ResNet34 architecture (pyannote's community-1 embedding), random
weights. PLDA: estimated from random vectors (VBx needs one). The hub is out of reach; speed
does not depend on the weights, the number of embedding passes does depend on activity.
Audio: pyannote's 30 s sample file repeated to 1, 10 and 30 minutes (60 with --minutes).

Time is split with the pipeline's hook: segmentation (sliding window, 8 s chunks, step
10 %), embeddings, clustering (VBx and reconstruction, from the embeddings' end to the
output), and other (binarisation, speaker counting). Peak memory: the process's resident
memory sampled every 20 ms during the call (its peak, and its growth over the resident
memory before the call); with `--device cuda`, the GPU's peak allocated memory too.
Embedding passes: waveforms whose filter banks the embedding model computes (one per
pass, torch or ONNX trunk). Each
(variant, duration) is run once, variants of one duration in turn, with the same batch sizes.

    python benchmarks/bench_pipeline.py [--minutes 1 10 30] [--variants pyannote-unpruned s80 ...]
        [--skip pyannote-unpruned:30] [--onnx-dir DIR]
    python benchmarks/bench_pipeline.py --device cuda --segmentation-batch-size 32 \
        --embedding-batch-size 32
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_pruned_wavlm import _segmentation  # noqa: E402

from pyannote_wavlm_prune.deploy import OnnxSegmentation  # noqa: E402
from pyannote_wavlm_prune.frontends import REFERENCE_BASE_PLUS_S80  # noqa: E402
from pyannote_wavlm_prune.pipelines import SpeakerDiarization, estimate_plda  # noqa: E402
from pyannote_wavlm_prune.pipelines.segmentation_bench import pyannote_sample  # noqa: E402

SAMPLE_RATE = 16000
# variant -> (structure, segmentation_runtime, pipeline class, embeddings per chunk,
# embedding_runtime)
VARIANTS = {
    "pyannote-unpruned": (None, None, "pyannote", False, None),
    "unpruned-per-pair": (None, None, "ours", False, None),
    "unpruned": (None, None, "ours", True, None),
    "s80-per-pair": (REFERENCE_BASE_PLUS_S80, None, "ours", False, None),
    "s80": (REFERENCE_BASE_PLUS_S80, None, "ours", True, None),
    "s80-torch-int8": (REFERENCE_BASE_PLUS_S80, "torch-int8", "ours", True, None),
    "s80-ort": (REFERENCE_BASE_PLUS_S80, "onnxruntime", "ours", True, None),
    "s80-ort-int8": (REFERENCE_BASE_PLUS_S80, "onnxruntime-int8", "ours", True, None),
    "s80-ort-int8+emb-ort": (REFERENCE_BASE_PLUS_S80, "onnxruntime-int8", "ours", True,
                             "onnxruntime"),
    "s80-ort-int8+emb-ort-int8": (REFERENCE_BASE_PLUS_S80, "onnxruntime-int8", "ours", True,
                                  "onnxruntime-int8"),
}
DEFAULT_VARIANTS = ["pyannote-unpruned", "unpruned", "s80-per-pair", "s80", "s80-ort-int8",
                    "s80-ort-int8+emb-ort", "s80-ort-int8+emb-ort-int8"]
# powerset classes (silence, speaker 1, speaker 2, speakers 1 + 2) the classifier favours, and
# by how much (logits): two active local speakers per chunk (see the docstring)
FAVOURED_CLASSES, FAVOUR = [0, 1, 2, 5], 2.0


def wespeaker_resnet34():
    """pyannote's WeSpeaker ResNet34 (random weights) with speaker-embedding specifications."""
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.embedding import WeSpeakerResNet34

    torch.manual_seed(0)
    model = WeSpeakerResNet34()
    model.specifications = Specifications(problem=Problem.REPRESENTATION,
                                          resolution=Resolution.CHUNK, duration=8.0)
    return model.eval()


def two_speakers(segmentation):
    """`segmentation` whose classifier favours FAVOURED_CLASSES by FAVOUR (in place)."""
    with torch.no_grad():
        segmentation.classifier.bias[FAVOURED_CLASSES] += FAVOUR
    return segmentation


class PassCounter:
    """Counts the waveforms whose filter banks the embedding model computes: every pass, with
    a torch or an ONNX Runtime trunk (the instance's `compute_fbank` is wrapped)."""

    def __init__(self, model: torch.nn.Module):
        self.count = 0
        compute_fbank = model.compute_fbank

        def counted(waveforms: torch.Tensor) -> torch.Tensor:
            self.count += waveforms.shape[0]
            return compute_fbank(waveforms)

        model.compute_fbank = counted


class Activity:
    """Pipeline hook: how many (chunk, speaker) pairs and chunks have an active frame."""

    def __init__(self, pipeline):
        self.pipeline = pipeline
        self.pairs = self.chunks = self.total_pairs = 0

    def __call__(self, step_name, step_artifact, file=None, total=None, completed=None):
        if step_name == "segmentation" and step_artifact is not None:
            from pyannote.audio.utils.signal import binarize

            binary = step_artifact.data
            if not self.pipeline._segmentation.model.specifications.powerset:
                binary = binarize(step_artifact, onset=self.pipeline.segmentation.threshold).data
            active = np.nansum(binary, axis=1) > 0
            self.pairs, self.chunks = int(active.sum()), int(active.any(axis=1).sum())
            self.total_pairs = active.size


def random_plda(dimension: int):
    generator = np.random.default_rng(0)
    centres = generator.normal(size=(100, dimension))
    vectors = np.repeat(centres, 5, axis=0) + 0.5 * generator.normal(size=(500, dimension))
    # 99 dimensions at most (100 speakers); pyannote's community-1 PLDA keeps 128
    return estimate_plda(vectors, [f"speaker{i // 5}" for i in range(500)], lda_dimension=64)


def audio(minutes: float) -> dict:
    """pyannote's sample file repeated (and cut) to `minutes` minutes, in memory."""
    waveform = pyannote_sample()["waveform"]
    num_samples = int(minutes * 60 * SAMPLE_RATE)
    repeats = -(-num_samples // waveform.shape[1])
    waveform = waveform.repeat(1, repeats)[:, :num_samples]
    return {"waveform": waveform, "sample_rate": SAMPLE_RATE, "uri": f"sample-{minutes:g}min"}


class StepClock:
    """Pipeline hook: when each step ended (its final call carries the step's artifact)."""

    def __init__(self, then=None):
        self.ends: dict[str, float] = {}
        self.then = then

    def __call__(self, step_name, step_artifact, file=None, total=None, completed=None):
        if step_artifact is not None and total is None:
            self.ends[step_name] = time.perf_counter()
        if self.then is not None:
            self.then(step_name, step_artifact, file=file, total=total, completed=completed)


def resident_memory() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak resident memory of this process while the context is open (sampled)."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval

    def __enter__(self):
        self.before = self.peak = resident_memory()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, resident_memory())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, resident_memory())


def run(pipeline, file: dict, device: torch.device, passes: PassCounter) -> dict:
    activity = Activity(pipeline)
    clock = StepClock(then=activity)
    before = passes.count
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with PeakMemory() as memory:
        start = time.perf_counter()
        pipeline(file, hook=clock)
        end = time.perf_counter()
    ends = clock.ends
    segmentation = ends["segmentation"] - start
    counting = ends.get("speaker_counting", ends["segmentation"]) - ends["segmentation"]
    embeddings = ends["embeddings"] - ends.get("speaker_counting", ends["segmentation"])
    clustering = end - ends["embeddings"]
    gpu = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    return {"segmentation": segmentation, "embeddings": embeddings, "clustering": clustering,
            "other": counting, "total": end - start, "peak_memory": memory.peak,
            "memory_growth": memory.peak - memory.before, "gpu_memory": gpu,
            "passes": passes.count - before, "active_pairs": activity.pairs,
            "active_chunks": activity.chunks, "pairs": activity.total_pairs}


def clustering_seconds(pipeline, minutes: float, num_speakers: int = 10) -> float:
    """Seconds of the pipeline's clustering step alone for a file of `minutes` minutes

    Embeddings and binarised segmentations of the sizes the pipeline makes for such a file
    (chunks every 0.8 s, 4 local speakers, 3 of them active), random: `num_speakers` clusters
    plus noise.
    """
    from pyannote.core import SlidingWindow, SlidingWindowFeature

    model = pipeline._segmentation.model
    duration = model.specifications.duration
    step = pipeline.segmentation_step * duration
    num_chunks = int((minutes * 60 - duration) // step) + 1
    num_frames = model.num_frames(round(duration * SAMPLE_RATE))
    generator = np.random.default_rng(0)
    dimension = pipeline._embedding.dimension
    centres = generator.normal(size=(num_speakers, dimension))
    who = generator.integers(num_speakers, size=(num_chunks, 4))
    embeddings = centres[who] + 0.3 * generator.normal(size=(num_chunks, 4, dimension))
    # one speaker per frame, three of them long enough alone to be clustered (VBx keeps an
    # embedding whose speaker is alone in >= 20 % of the frames)
    speaker = generator.choice(4, size=(num_chunks, num_frames), p=[0.5, 0.3, 0.2, 0.0])
    activity = np.eye(4, dtype=np.float32)[speaker]
    segmentations = SlidingWindowFeature(activity, SlidingWindow(start=0.0, duration=duration,
                                                                 step=step))
    start = time.perf_counter()
    pipeline.clustering(embeddings=embeddings, segmentations=segmentations, num_clusters=None,
                        min_clusters=1, max_clusters=np.inf, file=None,
                        frames=model.receptive_field)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, nargs="*", default=[1, 10, 30],
                        help="file durations in minutes (default: 1 10 30)")
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS,
                        choices=list(VARIANTS), help="pipeline variants (rows)")
    parser.add_argument("--skip", nargs="*", default=[], metavar="VARIANT:MINUTES",
                        help="pairs not to run, e.g. pyannote-unpruned:30 (too slow on 2 cores)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--segmentation-batch-size", type=int, default=8)
    parser.add_argument("--embedding-batch-size", type=int, default=8)
    parser.add_argument("--onnx-dir", type=Path, default=None,
                        help="ONNX graphs written by bench_deploy.py --onnx-dir (s80.onnx), "
                             "reused (after a check against the model) instead of exported")
    parser.add_argument("--clustering-minutes", type=float, nargs="*", default=[],
                        help="also time the clustering step alone on random embeddings of "
                             "files of these durations (minutes)")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    device = torch.device(arguments.device)

    plda = random_plda(wespeaker_resnet34().dimension)
    pipelines, counters = {}, {}
    for name in arguments.variants:
        structure, runtime, which, chunkwise, embedding_runtime = VARIANTS[name]
        torch.manual_seed(0)
        start = time.perf_counter()
        segmentation = two_speakers(_segmentation(structure))
        cached = arguments.onnx_dir / "s80.onnx" if arguments.onnx_dir else None
        if runtime and runtime.startswith("onnxruntime") and cached and cached.is_file():
            segmentation = OnnxSegmentation.from_onnx(cached, segmentation)
        # one embedding model per pipeline: its pass counter counts that pipeline's passes
        embedding = wespeaker_resnet34()
        options = {"segmentation": segmentation, "embedding": embedding, "plda": plda,
                   "clustering": "VBxClustering", "segmentation_step": 0.1,
                   "segmentation_batch_size": arguments.segmentation_batch_size,
                   "embedding_batch_size": arguments.embedding_batch_size}
        if which == "pyannote":
            from pyannote.audio.pipelines import SpeakerDiarization as PyannoteSpeakerDiarization

            pipeline = PyannoteSpeakerDiarization(**options)
            pipeline = pipeline.instantiate(SpeakerDiarization.default_parameters(pipeline))
        else:
            extra = {"embedding_runtime": embedding_runtime} if embedding_runtime else {}
            pipeline = SpeakerDiarization(segmentation_runtime=runtime,
                                          chunkwise_embeddings=chunkwise, **extra, **options)
            pipeline = pipeline.instantiate(pipeline.default_parameters())
        pipelines[name] = pipeline.to(device)
        # the model the pipeline runs (for an ONNX runtime, a copy of `embedding`)
        counters[name] = PassCounter(pipeline._embedding.model_)
        print(f"{name}: pipeline ready in {time.perf_counter() - start:.0f} s", file=sys.stderr,
              flush=True)

    skipped = set(arguments.skip)
    rows = []
    for minutes in arguments.minutes:
        file = audio(minutes)
        for name, pipeline in pipelines.items():
            if f"{name}:{minutes:g}" in skipped:
                continue
            result = run(pipeline, file, device, counters[name])
            rows.append((name, minutes, result))
            print(f"{name} {minutes:g} min: {result}", file=sys.stderr, flush=True)

    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)} (clustering on CPU)"
    else:
        where = f"{arguments.threads} CPU threads"
    gpu = device.type == "cuda"
    print(f"SpeakerDiarization (VBx, WeSpeaker ResNet34, 8 s chunks, step 0.8 s, batches of "
          f"{arguments.segmentation_batch_size}/{arguments.embedding_batch_size}), "
          f"{where}, random weights (segmentation: two active local speakers per chunk); RTF = compute time / "
          "audio duration; share = part of the whole pipeline's time; passes = waveforms "
          "through the embedding model (active pairs / chunks with an active speaker)\n")
    print("| pipeline | file | total RTF | segmentation RTF (share) | embeddings RTF (share) "
          "| clustering RTF (share) | other RTF | embedding passes (active pairs / chunks) "
          "| peak memory (GB) | growth during call (GB) |"
          + (" peak GPU memory (GB) |" if gpu else ""))
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
          + (" --- |" if gpu else ""))
    for name, minutes, r in rows:
        duration = minutes * 60
        total = r["total"]

        def part(key, r=r, total=total, duration=duration):
            return f"{r[key] / duration:.4f} ({100 * r[key] / total:.0f} %)"

        print(f"| {name} | {minutes:g} min | {total / duration:.3f} | {part('segmentation')} | "
              f"{part('embeddings')} | {part('clustering')} | {r['other'] / duration:.4f} | "
              f"{r['passes']} ({r['active_pairs']}/{r['pairs']} / {r['active_chunks']}) | "
              f"{r['peak_memory'] / 1e9:.2f} | {r['memory_growth'] / 1e9:.2f} |"
              + (f" {r['gpu_memory'] / 1e9:.2f} |" if gpu else ""))
    if arguments.clustering_minutes:
        pipeline = next(iter(pipelines.values()))
        print("\nVBx clustering step alone (random embeddings of the pipeline's sizes)\n")
        print("| file | chunks x local speakers | clustering (s) | clustering RTF |")
        print("| --- | --- | --- | --- |")
        for minutes in arguments.clustering_minutes:
            seconds = clustering_seconds(pipeline, minutes)
            chunks = int((minutes * 60 - 8.0) // 0.8) + 1
            print(f"| {minutes:g} min | {chunks} x 4 | {seconds:.2f} | "
                  f"{seconds / (minutes * 60):.4f} |")
    by_key = {(name, minutes): r for name, minutes, r in rows}
    print()
    for minutes in arguments.minutes:
        reference = by_key.get(("pyannote-unpruned", minutes))
        if reference is None:
            continue
        for name in pipelines:
            if name != "pyannote-unpruned" and (name, minutes) in by_key:
                r = by_key[(name, minutes)]
                print(f"{minutes:g} min, {name} vs pyannote-unpruned: pipeline "
                      f"{reference['total'] / r['total']:.2f}x faster, segmentation "
                      f"{reference['segmentation'] / r['segmentation']:.2f}x, embeddings "
                      f"{reference['embeddings'] / r['embeddings']:.2f}x")


if __name__ == "__main__":
    main()
