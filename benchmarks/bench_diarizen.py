"""Speed of DiariZen's released structures, imported, against their unpruned architectures.

Whole segmentation models as `import_diarizen` builds them (DiariZen's options: raw layer
weights, last-CNN scale, norms over kept channels; Conformer 4 x 256; 4 speakers), with
random weights (speed does not depend on them): WavLM Base+ unpruned vs `wavlm_base_s80_md`,
WavLM Large unpruned vs `wavlm_large_s80_md`. Batch 1 (`--batch-size`), fp32, CPU
(`--device cuda`: GPU); each pair takes turns (round robin) and the median is reported. Prints `bench_table` and a markdown table.

    python benchmarks/bench_diarizen.py [--threads 2] [--duration 16] [--repeats 5]
    python benchmarks/bench_diarizen.py --device cuda --batch-size 32
"""

from __future__ import annotations

import argparse

import torch
from pyannote.audio.core.task import Problem, Resolution, Specifications

from pyannote_wavlm_prune import WavLMSegmentation
from pyannote_wavlm_prune.frontends.published import published_structure
from pyannote_wavlm_prune.importers.diarizen import diarizen_model_options
from pyannote_wavlm_prune.pipelines.segmentation_bench import bench_segmentation, bench_table

PAIRS = (("wavlm_base_plus", "wavlm_base_s80_md"), ("wavlm_large", "wavlm_large_s80_md"))


def imported_like(name: str, duration: float) -> WavLMSegmentation:
    """A WavLMSegmentation shaped as `import_diarizen` builds it for structure `name`."""
    config, structure = published_structure(name)
    unpruned = structure.is_full
    model = WavLMSegmentation(wavlm=config, structure=None if unpruned else structure,
                              **diarizen_model_options())
    model.specifications = Specifications(
        problem=Problem.MONO_LABEL_CLASSIFICATION, resolution=Resolution.FRAME,
        duration=duration, classes=[f"speaker#{i + 1}" for i in range(4)],
        powerset_max_classes=2, permutation_invariant=True)
    model.build()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--batch-size", type=int, default=1, help="chunks per call (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--duration", type=float, default=16.0,
                        help="chunk duration in seconds (default 16: DiariZen's window)")
    parser.add_argument("--repeats", type=int, default=5, help="timed batches per model")
    arguments = parser.parse_args()
    torch.manual_seed(0)

    rows = []
    for unpruned_name, pruned_name in PAIRS:
        models = [imported_like(unpruned_name, arguments.duration),
                  imported_like(pruned_name, arguments.duration)]
        results = bench_segmentation(models, chunk_duration=arguments.duration,
                                     batch_size=arguments.batch_size, device=arguments.device,
                                     repeats=arguments.repeats, num_threads=arguments.threads,
                                     names=[unpruned_name, pruned_name])
        print(bench_table(results), "\n", flush=True)
        rows.extend(results)
        del models

    print(f"| model | params (M) | GMACs / {arguments.duration:g} s | latency (ms) | speed-up |")
    print("| --- | --- | --- | --- | --- |")
    for result in rows:
        print(f"| {result.name} | {result.parameters / 1e6:.2f} | {result.macs / 1e9:.2f} | "
              f"{result.seconds_per_batch * 1e3:.0f} | {result.speedup:.2f}x |")


if __name__ == "__main__":
    main()
