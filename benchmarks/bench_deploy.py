"""Segmentation-model latency by deployment variant: eager, torch int8, ONNX Runtime fp32/int8.

The whole WavLMSegmentation (WavLM Base+ config, default Conformer back end, powerset over 4
speakers), random weights (speed does not depend on them), unpruned (stock transformers
modules, what a user has without pruning) and pruned to REFERENCE_BASE_PLUS_S80. One chunk
(8 s by default), batch 1, on CPU threads (2 by default, torch and ONNX Runtime alike).

Every variant is called in turn (round robin: a slow phase of the shared machine hits them
all), after warm-up calls; the median is reported, with speed-ups relative to the first row,
all measured in this one run. Calls are 0.2 s apart (`--pause`): after a call, ONNX
Runtime's worker threads spin for a while, and without the pause they took the 2 cores from
whichever variant came next (an ONNX Runtime int8 session measured 275 ms after an fp32
session without pauses, 239 ms with them). ONNX graphs are exported (and checked against
torch) first; `--onnx-dir` keeps them between runs (the unpruned model's export took 109 s).

`--device cuda` measures the GPU variants instead: fp32 eager, weight norm folded, and fp16
autocast (torch's dynamic int8 is CPU-only; ONNX Runtime runs there only with its CUDA
execution provider, from the onnxruntime-gpu package, used when it is installed).
`--batch` sets the chunks per call (a GPU is used with batches: the exported pipelines' 32).

    python benchmarks/bench_deploy.py [--threads 2] [--repetitions 8] [--onnx-dir DIR]
    python benchmarks/bench_deploy.py --device cuda --batch 1 32
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_pruned_wavlm import _segmentation  # noqa: E402

from pyannote_wavlm_prune.deploy.inference import optimize_for_inference  # noqa: E402
from pyannote_wavlm_prune.deploy.onnx import (  # noqa: E402
    DEFAULT_OPSET,
    inference_session,
    quantize_graph_int8,
    read_graph,
    seal,
)
from pyannote_wavlm_prune.deploy.quantize import quantize_model_int8  # noqa: E402
from pyannote_wavlm_prune.deploy.segmentation import export_onnx, run_session  # noqa: E402
from pyannote_wavlm_prune.frontends import REFERENCE_BASE_PLUS_S80, Structure  # noqa: E402
from pyannote_wavlm_prune.frontends.presets import base_plus_config  # noqa: E402
from pyannote_wavlm_prune.pipelines.segmentation_bench import time_forward  # noqa: E402

SAMPLE_RATE = 16000


def onnx_graph(model, name: str, directory: Path, int8: bool = False) -> tuple[bytes, str]:
    """The model's ONNX graph (read from `directory` when there, else exported and checked)."""
    path = directory / f"{name}{'-int8' if int8 else ''}.onnx"
    graph = _cached(path)
    if graph is not None:
        return graph, "cached"
    fp32 = _cached(directory / f"{name}.onnx") if int8 else None
    if fp32 is not None:
        graph = quantize_graph_int8(fp32)
        path.write_bytes(seal(graph))
        return graph, "quantised from cached fp32"
    start = time.perf_counter()
    export = export_onnx(model, path, int8=int8)
    return export.onnx, f"exported in {time.perf_counter() - start:.0f} s; {export.summary()}"


def _cached(path: Path) -> bytes | None:
    """The graph stored at `path`, or None: absent, or of an earlier default opset (removed,
    to be exported again)."""
    import onnx

    if not path.is_file():
        return None
    graph = read_graph(path)
    opset = next(o.version for o in onnx.load_from_string(graph).opset_import
                 if o.domain in ("", "ai.onnx"))
    if opset == DEFAULT_OPSET:
        return graph
    path.unlink()
    return None


def probability_difference(variant: Callable, reference: Callable, example: torch.Tensor) -> float:
    with torch.inference_mode():
        return (variant(example).exp() - reference(example).exp()).abs().max().item()


def cpu_variants(unpruned, pruned, arguments, directory: Path) -> dict[str, Callable]:
    """Eager fp32 (stock and pruned), weight norm folded, torch int8, ONNX Runtime fp32/int8."""
    variants: dict[str, Callable] = {
        "unpruned, fp32 eager (stock transformers)": unpruned,
        "s80, fp32 eager": pruned,
        "s80, fp32 eager, weight norm folded": optimize_for_inference(copy.deepcopy(pruned)),
        "s80, torch int8 (dynamic, Linear)": quantize_model_int8(pruned),
    }
    graphs = [("s80, ONNX Runtime fp32", pruned, "s80", False),
              ("s80, ONNX Runtime int8 (dynamic, MatMul)", pruned, "s80", True)]
    if not arguments.skip_unpruned_onnx:
        # the full structure (our SDPA attention): the stock one is what eager runs above,
        # same weights
        full = _segmentation(Structure.full(base_plus_config()))
        full.load_state_dict(unpruned.state_dict())
        graphs.append(("unpruned, ONNX Runtime fp32", full, "unpruned", False))
    for label, model, name, int8 in graphs:
        graph, note = onnx_graph(model, name, directory, int8=int8)
        session = inference_session(graph, num_threads=arguments.threads)
        variants[label] = lambda x, session=session: run_session(session, x)
        print(f"{label}: {note}", file=sys.stderr, flush=True)
    return variants


def autocast(model, dtype: torch.dtype) -> Callable:
    def forward(x):
        with torch.autocast("cuda", dtype=dtype):
            return model(x).float()
    return forward


def gpu_variants(unpruned, pruned, arguments, directory: Path) -> dict[str, Callable]:
    """Eager fp32 (stock and pruned), weight norm folded, fp16 autocast; ONNX Runtime's CUDA
    execution provider when onnxruntime-gpu is installed."""
    device = torch.device(arguments.device)
    unpruned, pruned = unpruned.to(device), pruned.to(device)
    folded = optimize_for_inference(copy.deepcopy(pruned))
    variants: dict[str, Callable] = {
        "unpruned, fp32 eager (stock transformers)": unpruned,
        "s80, fp32 eager": pruned,
        "s80, fp32 eager, weight norm folded": folded,
        "unpruned, fp16 autocast": autocast(unpruned, torch.float16),
        "s80, fp16 autocast, weight norm folded": autocast(folded, torch.float16),
    }
    try:
        import onnxruntime
        providers = onnxruntime.get_available_providers()
    except ImportError:
        providers = []
    if "CUDAExecutionProvider" in providers:
        graph, note = onnx_graph(pruned.cpu(), "s80", directory)
        pruned.to(device)
        session = inference_session(graph, device=device)
        variants["s80, ONNX Runtime fp32 (CUDA)"] = lambda x: run_session(session, x)
        print(f"s80, ONNX Runtime fp32 (CUDA): {note}", file=sys.stderr, flush=True)
    else:
        print(f"ONNX Runtime rows skipped: no CUDAExecutionProvider (providers {providers}; "
              "the onnxruntime-gpu package has it)", file=sys.stderr, flush=True)
    return variants


def measure_variants(variants: dict[str, Callable], example: torch.Tensor, arguments):
    """Median seconds per variant (round robin), and max |p - p_fp32| per variant."""
    unpruned, pruned = (variants["unpruned, fp32 eager (stock transformers)"],
                        variants["s80, fp32 eager"])
    differences = {label: probability_difference(variant, unpruned if label.startswith(
        "unpruned") else pruned, example) for label, variant in variants.items()}
    timings: dict[str, list[float]] = {label: [] for label in variants}
    with torch.inference_mode():
        for _ in range(arguments.warmup):
            for variant in variants.values():
                variant(example)
        for _ in range(arguments.repetitions):
            for label, variant in variants.items():
                time.sleep(arguments.pause)  # the last call's idle threads stop spinning
                timings[label].append(time_forward(variant, example, example.device))
    return {label: statistics.median(times) for label, times in timings.items()}, differences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--duration", type=float, default=8.0, help="chunk duration (s)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1],
                        help="chunks per call; one table per value (default 1)")
    parser.add_argument("--repetitions", type=int, default=8, help="timed calls per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per variant")
    parser.add_argument("--pause", type=float, default=0.2,
                        help="seconds between calls, untimed (default 0.2, see above)")
    parser.add_argument("--onnx-dir", type=Path, default=None,
                        help="where ONNX graphs are kept between runs (default: temporary)")
    parser.add_argument("--skip-unpruned-onnx", action="store_true",
                        help="skip the unpruned ONNX variant (its export takes minutes)")
    arguments = parser.parse_args()

    torch.set_num_threads(arguments.threads)
    device = torch.device(arguments.device)
    directory = arguments.onnx_dir or Path(tempfile.mkdtemp(prefix="bench-deploy-"))
    directory.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(0)
    unpruned = _segmentation()
    torch.manual_seed(0)
    pruned = _segmentation(REFERENCE_BASE_PLUS_S80)
    build = gpu_variants if device.type == "cuda" else cpu_variants
    variants = build(unpruned, pruned, arguments, directory)
    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    else:
        where = f"{arguments.threads} CPU threads"

    for batch in arguments.batch:
        example = 0.1 * torch.randn(batch, 1, int(arguments.duration * SAMPLE_RATE),
                                    generator=torch.Generator().manual_seed(0))
        medians, differences = measure_variants(variants, example.to(device), arguments)
        reference = medians["unpruned, fp32 eager (stock transformers)"]
        s80 = medians["s80, fp32 eager"]
        print(f"Whole WavLMSegmentation (Base+ config, Conformer back end), "
              f"{arguments.duration:g} s chunks, batch {batch}, {where}, median of "
              f"{arguments.repetitions} round-robin calls {arguments.pause:g} s apart, random "
              "weights\n")
        print("| variant | latency (ms) | speed-up vs unpruned eager | vs s80 eager | "
              "max abs diff (probabilities) vs fp32 torch |")
        print("| --- | --- | --- | --- | --- |")
        for label, seconds in medians.items():
            print(f"| {label} | {seconds * 1e3:.1f} | {reference / seconds:.2f}x | "
                  f"{s80 / seconds:.2f}x | {differences[label]:.2g} |")
        best = min((seconds, label) for label, seconds in medians.items()
                   if label.startswith("s80"))
        print(f"\nBest s80 {device.type.upper()} variant at batch {batch}: {best[1]}, "
              f"{reference / best[0]:.2f}x the unpruned fp32 eager model"
              + (" (goal on CPU: 6x)" if device.type == "cpu" else "") + "\n", flush=True)


if __name__ == "__main__":
    main()
