"""Speed, size and cost of segmentation models, side by side."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from pyannote.audio import Model
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count
from tqdm.auto import tqdm

from ..frontends.cost import expected_macs
from ..models.loading import load_model


def pyannote_sample() -> dict:
    """pyannote's 30 s sample recording as an in-memory file (waveform, sample_rate, uri)

    Read with the standard library (it is 16 kHz mono 16-bit PCM), so that it needs no audio
    decoder, unlike `pyannote.audio.sample`, which decodes it with torchcodec on import.
    """
    import wave

    import numpy as np
    import pyannote.audio

    path = Path(pyannote.audio.__file__).parent / "sample" / "sample.wav"
    with wave.open(str(path), "rb") as reader:
        if (reader.getframerate(), reader.getnchannels(), reader.getsampwidth()) != (16000, 1, 2):
            raise ValueError(f"{path} is not 16 kHz mono 16-bit PCM: expected pyannote's sample.")
        pcm = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    waveform = torch.from_numpy(pcm.astype(np.float32) / 32768.0)[None]
    return {"waveform": waveform, "sample_rate": 16000, "uri": "sample"}


@dataclass
class BenchResult:
    """One model's size, cost and speed on batches of chunks (ratios: to the first model)."""

    name: str
    parameters: int
    macs: int  # multiply-accumulates for one chunk, whole model (FlopCounterMode flops / 2)
    wavlm_macs: int | None  # WavLM front end only, from the cost model (WavLMSegmentation)
    seconds_per_batch: float  # median over repeats
    batch_size: int
    chunk_duration: float
    num_threads: int
    parameter_ratio: float = 1.0
    macs_ratio: float = 1.0
    speedup: float = 1.0  # first model's time / this model's time

    @property
    def real_time_factor(self) -> float:
        """Seconds of compute per second of audio."""
        return self.seconds_per_batch / (self.batch_size * self.chunk_duration)

    def to_dict(self) -> dict:
        return {**asdict(self), "real_time_factor": self.real_time_factor}


@contextmanager
def _threads(num_threads: int | None):
    if num_threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# torch 2.11 counts scaled_dot_product_attention on GPU kernels only: on CPU it dispatches to
# this op, which FlopCounterMode would silently count as 0 (pruned attention layers use it)
_CPU_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops}


def count_macs(model: torch.nn.Module, *inputs: torch.Tensor) -> int:
    """Multiply-accumulates of `model(*inputs)`: FlopCounterMode's flops / 2, CPU attention too."""
    # no_grad, not inference_mode: WavLM's weight-normed positional convolution cannot be
    # evaluated under FlopCounterMode in inference mode (torch 2.11)
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION) as counter:
        model(*inputs)
    return counter.get_total_flops() // 2


def time_forward(model: Callable, chunks: torch.Tensor, device: torch.device) -> float:
    """Seconds taken by one forward pass on `chunks`."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    model(chunks)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _wavlm_macs(model: Model, num_samples: int) -> int | None:
    frontend = getattr(model, "frontend", None)
    if frontend is None:
        return None
    return int(expected_macs(frontend, num_samples))


def bench_segmentation(
    models: Sequence[Model | str | os.PathLike],
    chunk_duration: float = 8.0,
    batch_size: int = 8,
    repeats: int = 5,
    warmup: int = 1,
    num_threads: int | None = None,
    device: str | torch.device = "cpu",
    names: Sequence[str] | None = None,
    progress: bool = False,
) -> list[BenchResult]:
    """Time segmentation inference on batches of chunks, the models taking turns

    Parameters
    ----------
    models : sequence of Model or checkpoint paths
        Models to compare; ratios are relative to the first.
    chunk_duration : float, optional
        Chunk duration in seconds. Defaults to 8.0 (the method's training chunks).
    batch_size : int, optional
        Chunks per batch. Defaults to 8.
    repeats : int, optional
        Timed batches per model, the models taking turns (round robin); the median is
        reported. Defaults to 5.
    warmup : int, optional
        Untimed batches first (allocations, kernel choice). Defaults to 1.
    num_threads : int, optional
        torch CPU threads during the benchmark. Defaults to torch's setting.
    device : str or torch.device, optional
        Defaults to "cpu".
    names : sequence of str, optional
        Display names. Defaults to the checkpoint paths (or class names).
    progress : bool, optional
        A progress bar over the batches (warm-up and timed, every model). Defaults to False.

    Returns
    -------
    results : list of BenchResult, in the order of `models`
    """
    if not models:
        raise ValueError("models is empty: expected at least one model or checkpoint.")
    if names is not None and len(names) != len(models):
        raise ValueError(f"{len(names)} names for {len(models)} models: expected one each.")
    for name, value in (("chunk_duration", chunk_duration), ("batch_size", batch_size),
                        ("repeats", repeats)):
        if value <= 0:
            raise ValueError(f"{name}={value}: expected a positive value.")
    device = torch.device(device)

    if names is None:
        names = [str(Path(m)) if isinstance(m, (str, os.PathLike)) else type(m).__name__
                 for m in models]
    loaded = [load_model(given, "model", strict=False).eval().to(device) for given in models]
    generator = torch.Generator().manual_seed(0)
    inputs, macs, timings = [], [], [[] for _ in loaded]
    with _threads(num_threads):
        for model in loaded:
            num_samples = round(chunk_duration * model.hparams.sample_rate)
            chunks = torch.randn(batch_size, model.hparams.num_channels, num_samples,
                                 generator=generator).to(device)
            inputs.append(chunks)
            macs.append(count_macs(model, chunks[:1]))
        bar = tqdm(total=(warmup + repeats) * len(loaded), desc="batches", unit="batch",
                   disable=not progress)
        with torch.inference_mode(), bar:
            for model, chunks in zip(loaded, inputs, strict=True):
                for _ in range(warmup):
                    model(chunks)
                    bar.update()
            # round robin: a slow spell of the machine slows every model, not just one
            for _ in range(repeats):
                for index, (model, chunks) in enumerate(zip(loaded, inputs, strict=True)):
                    timings[index].append(time_forward(model, chunks, device))
                    bar.update()
        used_threads = torch.get_num_threads()

    results = [
        BenchResult(
            name=name,
            parameters=sum(p.numel() for p in model.parameters()),
            macs=model_macs,
            wavlm_macs=_wavlm_macs(model, chunks.shape[-1]),
            seconds_per_batch=statistics.median(model_timings),
            batch_size=batch_size,
            chunk_duration=chunk_duration,
            num_threads=used_threads,
        )
        for name, model, chunks, model_macs, model_timings
        in zip(names, loaded, inputs, macs, timings, strict=True)
    ]
    reference = results[0]
    for result in results:
        result.parameter_ratio = result.parameters / reference.parameters
        result.macs_ratio = result.macs / reference.macs if reference.macs else float("nan")
        result.speedup = reference.seconds_per_batch / result.seconds_per_batch
    return results


def bench_table(results: Sequence[BenchResult]) -> str:
    """Results as a text table, ratios relative to the first row."""
    header = (f"{'model':<28} {'params':>12} {'ratio':>6} {'GMACs/chunk':>11} {'ratio':>6} "
              f"{'WavLM GMACs':>11} {'s/batch':>8} {'RTF':>7} {'speedup':>7}")
    lines = [header, "-" * len(header)]
    for r in results:
        name = r.name if len(r.name) <= 28 else "..." + r.name[-25:]
        wavlm = "-" if r.wavlm_macs is None else f"{r.wavlm_macs / 1e9:.3f}"
        lines.append(
            f"{name:<28} {r.parameters:>12,d} {r.parameter_ratio:>6.3f} {r.macs / 1e9:>11.3f} "
            f"{r.macs_ratio:>6.3f} {wavlm:>11} {r.seconds_per_batch:>8.4f} "
            f"{r.real_time_factor:>7.4f} {r.speedup:>6.2f}x"
        )
    first = results[0]
    lines.append(f"batches of {first.batch_size} chunks of {first.chunk_duration} s; "
                 f"{first.num_threads} torch threads; GMACs: FlopCounterMode flops / 2 "
                 "(whole model), WavLM: the cost model")
    return "\n".join(lines)
