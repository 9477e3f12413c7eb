"""Size and speed of the released WavLM Base+ 80 % structure against the unpruned Base+.

Random weights (speed does not depend on them). Three front ends:

- unpruned, stock transformers modules (what a user has without pruning);
- unpruned, built as the full structure (our SDPA attention: the pruned model's code path);
- pruned, REFERENCE_BASE_PLUS_S80 (docs/method.md#published-numbers).

Latency: one chunk (8 s by default), batch 1, fp32, inference mode, warm-up, then
interleaved repetitions (a, b, a, b, ...) so that a slow phase of the machine hits both;
the median is reported. Prints a markdown table.

    python benchmarks/bench_pruned_wavlm.py [--device cuda] [--threads 2] [--repetitions 10]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from torch import nn

from pyannote_wavlm_prune.frontends import (
    REFERENCE_BASE_PLUS_S80,
    Structure,
    WavLMFrontEnd,
    expected_macs,
)
from pyannote_wavlm_prune.frontends.presets import base_plus_config
from pyannote_wavlm_prune.pipelines.segmentation_bench import time_forward

SAMPLE_RATE = 16000


@torch.inference_mode()
def measure(
    model_a: Callable, model_b: Callable, example: torch.Tensor, repetitions: int = 10,
    warmup: int = 2,
) -> dict[str, float]:
    """Median latencies (seconds) of model_a(example) and model_b(example), and their ratio

    Calls alternate a, b, a, b, ... after `warmup` calls of each (not timed).

    example (Tensor): the input both models take, on their device
    returns: {"a": seconds, "b": seconds, "ratio": a / b} (medians), and the same with the
        fastest calls ("a_min", "b_min", "ratio_min"), less sensitive to a shared machine
    """
    device = example.device
    for _ in range(warmup):
        model_a(example)
        model_b(example)
    times_a, times_b = [], []
    for _ in range(repetitions):
        times_a.append(time_forward(model_a, example, device))
        times_b.append(time_forward(model_b, example, device))
    a, b = statistics.median(times_a), statistics.median(times_b)
    a_min, b_min = min(times_a), min(times_b)
    return {"a": a, "b": b, "ratio": a / b, "a_min": a_min, "b_min": b_min,
            "ratio_min": a_min / b_min}


def _parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _segmentation(structure=None) -> nn.Module:
    """WavLMSegmentation (default back end: Conformer 4 x 256) on Base+, powerset 4 speakers."""
    from pyannote.audio.core.task import Problem, Resolution, Specifications

    from pyannote_wavlm_prune import WavLMSegmentation

    model = WavLMSegmentation(wavlm=base_plus_config(), structure=structure)
    model.specifications = Specifications(
        problem=Problem.MONO_LABEL_CLASSIFICATION, resolution=Resolution.FRAME, duration=8.0,
        classes=[f"speaker#{i}" for i in range(4)], powerset_max_classes=2,
        permutation_invariant=True,
    )
    model.build()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--duration", type=float, default=8.0, help="chunk duration in seconds")
    parser.add_argument("--repetitions", type=int, default=10, help="timed calls per model")
    arguments = parser.parse_args()

    torch.set_num_threads(arguments.threads)
    torch.manual_seed(0)
    device = torch.device(arguments.device)
    config = base_plus_config()
    num_samples = int(arguments.duration * SAMPLE_RATE)

    stock = WavLMFrontEnd(config).eval()
    full = WavLMFrontEnd(config, structure=Structure.full(config)).eval()
    full.load_state_dict(stock.state_dict())
    pruned = WavLMFrontEnd(config, structure=REFERENCE_BASE_PLUS_S80).eval()
    models = {"stock": stock.to(device), "full": full.to(device), "pruned": pruned.to(device)}
    example = torch.randn(1, num_samples, device=device)

    against_stock = measure(stock, pruned, example, arguments.repetitions)
    against_full = measure(full, pruned, example, arguments.repetitions)
    latency = {
        "stock": against_stock["a"],
        "full": against_full["a"],
        # pruned was timed twice, interleaved with each: report the median of both runs' medians
        "pruned": statistics.median([against_stock["b"], against_full["b"]]),
    }
    descriptions = {
        "stock": "Base+ unpruned, stock transformers attention",
        "full": "Base+ unpruned, full structure (SDPA attention)",
        "pruned": "Base+ 80 % (REFERENCE_BASE_PLUS_S80)",
    }
    chunk = f"{arguments.duration:g} s"
    where = f"{device.type}" + (f", {arguments.threads} threads" if device.type == "cpu" else "")
    print(f"WavLM front end, batch 1, one {chunk} chunk, fp32, {where}, median of "
          f"{arguments.repetitions} interleaved runs\n")
    print(f"| model | params (M) | GMACs / {chunk} | latency (ms) | speed-up vs stock | "
          "speed-up vs full structure |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, model in models.items():
        macs = expected_macs(model, num_samples) / 1e9
        print(f"| {descriptions[name]} | {_parameters(model) / 1e6:.2f} | {macs:.2f} | "
              f"{latency[name] * 1e3:.0f} | "
              f"{latency['stock'] / latency[name]:.2f}x | {latency['full'] / latency[name]:.2f}x |")
    print(f"\nInterleaved ratios of medians: stock / pruned = {against_stock['ratio']:.2f}x, "
          f"full structure / pruned = {against_full['ratio']:.2f}x")
    print(f"Interleaved ratios of fastest calls: stock / pruned = "
          f"{against_stock['ratio_min']:.2f}x, full structure / pruned = "
          f"{against_full['ratio_min']:.2f}x")

    # the whole segmentation model: WavLM + weighted sum + Conformer back end + classifier
    del models, stock, full, pruned
    unpruned_model = _segmentation().to(device)
    pruned_model = _segmentation(REFERENCE_BASE_PLUS_S80).to(device)
    whole = measure(unpruned_model, pruned_model, example[:, None], arguments.repetitions)
    print("\nWhole WavLMSegmentation (Conformer back end), same input and settings\n")
    print("| model | params (M) | latency (ms) | speed-up |")
    print("| --- | --- | --- | --- |")
    for name, model, seconds in (("unpruned Base+", unpruned_model, whole["a"]),
                                 ("Base+ 80 %", pruned_model, whole["b"])):
        print(f"| {name} | {_parameters(model) / 1e6:.2f} | {seconds * 1e3:.0f} | "
              f"{whole['a'] / seconds:.2f}x |")


if __name__ == "__main__":
    main()
