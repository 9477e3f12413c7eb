"""The runtimes a pipeline can run its speaker embedding model with (config.yaml's
`embedding_runtime`).

A WeSpeaker ResNet (pyannote's `BaseWeSpeakerResNet`, e.g. the embedding of
speaker-diarization-community-1) computes an embedding in three steps:

1. `compute_fbank(waveforms)`: kaldi filter banks (torch.vmap of torchaudio's fbank), centred;
2. `resnet.forward_frames(fbank)`: the ResNet trunk, (batch, frames, 80) > (batch, 256, 10,
   frames / 8) for ResNet34: nearly all of the time;
3. `forward_embedding(frames, weights)`: weighted statistics pooling and a linear layer.

"onnxruntime" and "onnxruntime-int8" run step 2 with ONNX Runtime and keep steps 1 and 3 in
torch: the filter banks do not export (FFT), and the pooling is cheap and takes the pipeline's
(chunks, speakers, frames) masks as they are. The model returned is a copy of the torch
model (same class) whose `resnet` is an `OnnxTrunk` injected in place of the torch trunk:
`forward_frames`, `forward_embedding`, `forward(waveforms, weights)`, specifications,
dimension and `.to(device)` are the model's own, so `PretrainedSpeakerEmbedding(model)` and
`save_checkpoint(model)` treat it as the torch model it was made from: its state dict is that
model's, the graph is not saved (a pipeline exports it again at load: about 7 s for ResNet34
on one thread, fp32 or int8).

The graph's input is `fbank` (batch, frames, features) with dynamic batch and frames, its
output `frames`. It is checked against torch when exported (`export_trunk`): fp32 on the
frames (max abs difference relative to their largest value, FP32_TOLERANCE), int8 on the
embeddings (cosine distance, INT8_TOLERANCE), an `OnnxMismatchError` saying by how much
otherwise.

int8 is static QDQ quantisation (`quantize_graph_int8_static` of deploy.onnx: uint8
activations, int8 weights per output channel, ranges calibrated on synthetic speech-like
chunks, `speech_like`). On CPU,
ONNX Runtime fuses QDQ convolutions into QLinearConv (int8 kernels); dynamic quantisation
(ConvInteger) was 1.5x (uint8 weights) to 8x (int8 weights) slower than fp32 on the trunk,
and QDQ with int8 activations no faster than fp32; QDQ u8/s8 was 3.4x faster than fp32 (on
AVX512-VNNI, 1 thread, benchmarks/bench_embedding_runtime.py; ONNX Runtime notes that u8/s8
products may saturate on CPUs with AVX2 and no VNNI). int8 is a CPU runtime: with the CUDA
provider the QDQ graph runs but buys nothing.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..settings import check_setting
from .onnx import (
    DEFAULT_OPSET,
    GraphExport,
    OnnxMismatchError,
    Sessions,
    default_tolerance,
    inference_session,
    measure,
    quantize_graph_int8_static,
    reference_copy,
    require,
    run_graph,
    to_onnx,
)

# name -> what it does with the pipeline's speaker embedding model
EMBEDDING_RUNTIMES = {
    "torch": "the torch model as it is (fp32)",
    "onnxruntime": "the frame-wise trunk (a WeSpeaker ResNet) as an ONNX graph run by ONNX "
                   "Runtime (fp32, CUDA provider when on a GPU); filter banks and pooling "
                   "in torch",
    "onnxruntime-int8": "the same, its trunk statically quantised to int8 (QDQ, calibrated on "
                        "synthetic speech): a CPU runtime",
}

INPUT_NAME = "fbank"
OUTPUT_NAME = "frames"
# max |frames_onnx - frames_torch| / max |frames_torch| accepted for fp32 graphs: float32
# kernels of two runtimes (measured 1e-6 on a random ResNet34: summation order), a wrong
# graph is off by far more
FP32_TOLERANCE = 1e-4
# max cosine distance (1 - cos) between int8 and torch embeddings accepted for int8 graphs;
# measured 4e-5 to 1e-4 on a random ResNet34, clustering thresholds are about 0.3 to 0.7
INT8_TOLERANCE = 0.01
# the calibration set of int8 graphs: chunks of synthetic speech, their duration (s)
CALIBRATION_CHUNKS = 8
CALIBRATION_DURATION = 3.0

log = logging.getLogger(__name__)


def check_embedding_runtime(runtime: str | None) -> None:
    """Raise a ValueError unless `runtime` names an embedding runtime (or is None)."""
    check_setting("embedding_runtime", runtime)


def check_onnx_embedding(model: Any, runtime: str = "onnxruntime") -> None:
    """Raise a ValueError unless `model` splits into filter banks, a trunk and a pooling."""
    split = (callable(getattr(model, "compute_fbank", None))
             and callable(getattr(getattr(model, "resnet", None), "forward_frames", None))
             and callable(getattr(model, "forward_embedding", None)))
    if not split:
        raise ValueError(
            f"embedding_runtime={runtime!r} runs the frame-wise trunk of the speaker embedding "
            f"with ONNX Runtime, but the embedding model is a {type(model).__name__}, which has "
            "none: expected a model made of compute_fbank(waveforms), "
            "resnet.forward_frames(fbank) and forward_embedding(frames, weights) (pyannote's "
            "WeSpeaker ResNets, BaseWeSpeakerResNet), or embedding_runtime='torch'."
        )
    if getattr(model, "fbank_only", False):
        raise ValueError(
            f"embedding_runtime={runtime!r}, but the {type(model).__name__} has fbank_only "
            "set (it returns filter banks, no embedding): expected fbank_only=False."
        )


def speech_like(num_chunks: int, num_samples: int, sample_rate: int = 16000,
                seed: int = 0) -> torch.Tensor:
    """Synthetic speech-like waveforms: what int8 ranges are calibrated on

    Each chunk is a harmonic voice (30 harmonics of a pitch between 90 and 250 Hz, vibrato
    of 15 %) switched on and off at a syllable rate of 3 to 5 Hz, over a noise floor 26 dB
    below, peak at 0.1 (about -20 dBFS).

    returns (Tensor): shape (num_chunks, 1, num_samples), float32
    """
    generator = torch.Generator().manual_seed(seed)

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(num_chunks, 1, generator=generator,
                                                dtype=torch.float64)

    time_s = torch.arange(num_samples, dtype=torch.float64) / sample_rate
    pitch = uniform(90, 250) * (1 + 0.15 * torch.sin(2 * math.pi * uniform(0.5, 2) * time_s
                                                     + uniform(0, 2 * math.pi)))
    phase = 2 * math.pi * torch.cumsum(pitch, dim=1) / sample_rate
    voice = sum(torch.sin(k * phase) / k for k in range(1, 31))
    syllables = torch.sin(2 * math.pi * uniform(3, 5) * time_s
                          + uniform(0, 2 * math.pi)).clamp(min=0) ** 2
    noise = torch.randn(num_chunks, num_samples, generator=generator, dtype=torch.float64)
    waveforms = voice * syllables + 0.05 * noise
    waveforms = 0.1 * waveforms / waveforms.abs().amax(dim=1, keepdim=True)
    return waveforms.to(torch.float32).unsqueeze(1)


class FrameWiseTrunk(nn.Module):
    """What is exported: fbank (batch, frames, features) > resnet.forward_frames(fbank)"""

    def __init__(self, resnet: nn.Module):
        super().__init__()
        self.resnet = resnet

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        return self.resnet.forward_frames(fbank)


def check_inputs(model, seed: int = 1) -> list[torch.Tensor]:
    """Waveforms an export is checked on: 2 chunks of 3 s of synthetic speech, 1 of 1.7 s of
    white noise (at -20 dB), so two batch sizes and two lengths."""
    sample_rate = model.audio.sample_rate
    generator = torch.Generator().manual_seed(seed)
    return [
        speech_like(2, 3 * sample_rate, sample_rate, seed=seed),
        0.1 * torch.randn(1, 1, round(1.7 * sample_rate) + 123, generator=generator),
    ]


@dataclass(kw_only=True)
class TrunkExport(GraphExport):
    """An exported ONNX trunk and how closely it matches its torch model."""

    max_abs_diff: float  # max |frames_onnx - frames_torch| over the checked inputs
    relative_diff: float  # the same, divided by max |frames_torch|
    max_embedding_diff: float  # max |embedding_onnx - embedding_torch|
    max_cosine_distance: float  # max (1 - cos(embedding_onnx, embedding_torch))
    seconds: float = 0.0  # export (and quantisation) time

    def summary(self) -> str:
        if self.int8:
            kind, checked = "int8 (static QDQ)", "on the embeddings' cosine distance"
        else:
            kind, checked = "fp32", "on the frames, relative"
        return (
            f"ONNX trunk {kind}, opset {self.opset}, {len(self.onnx) / 1e6:.1f} MB, exported in "
            f"{self.seconds:.1f} s; against torch on inputs {self.checked_shapes}: frames max "
            f"abs diff {self.max_abs_diff:.3g} ({self.relative_diff:.3g} relative), embeddings "
            f"{self.max_embedding_diff:.3g}, cosine distance {self.max_cosine_distance:.3g}; "
            f"tolerance {self.tolerance:g} {checked}"
        )


def run_trunk(session, fbank: torch.Tensor) -> torch.Tensor:
    """Frames computed by an ONNX Runtime session, on fbank's device

    fbank (Tensor): shape (batch, frames, features)
    """
    return run_graph(session, fbank, INPUT_NAME, OUTPUT_NAME)


def compare(session, model, inputs: list[torch.Tensor]) -> dict[str, float]:
    """Differences between the trunk run by `session` and `model`'s, on frames and embeddings"""
    trunk = FrameWiseTrunk(model.resnet)

    def differences(actual, expected):
        embeddings = model.forward_embedding(expected)
        onnx_embeddings = model.forward_embedding(actual)
        cosine = nn.functional.cosine_similarity(onnx_embeddings, embeddings, dim=-1)
        return {"max_abs_diff": (actual - expected).abs().max(), "scale": expected.abs().max(),
                "max_embedding_diff": (onnx_embeddings - embeddings).abs().max(),
                "max_cosine_distance": (1 - cosine).max()}

    # the filter banks are computed once per input, for both runtimes
    with torch.inference_mode():
        fbanks = [model.compute_fbank(waveforms) for waveforms in inputs]
    measured = measure(fbanks, lambda fbank: trunk(fbank.clone()),
                       lambda fbank: run_trunk(session, fbank), differences, "ONNX trunk output")
    scale = measured.pop("scale")
    measured["relative_diff"] = measured["max_abs_diff"] / scale if scale > 0 else 0.0
    return measured


def export_trunk(
    model: nn.Module,
    *,
    int8: bool = False,
    opset: int = DEFAULT_OPSET,
    tolerance: float | None = None,
    calibration: torch.Tensor | None = None,
) -> TrunkExport:
    """Export the ResNet trunk of a speaker embedding model to ONNX, checked against torch

    Parameters
    ----------
    model : Model
        A WeSpeaker ResNet (see `check_onnx_embedding`). Left untouched.
    int8 : bool, optional
        Quantise the graph to int8 (static QDQ, `quantize_graph_int8_static`).
    opset : int, optional
        ONNX opset. Defaults to deploy.onnx's (20).
    tolerance : float, optional
        Largest accepted difference with torch: on the frames relative to their largest
        value for fp32 (default FP32_TOLERANCE, 1e-4), the embeddings' cosine distance for
        int8 (default INT8_TOLERANCE, 0.01).
    calibration : Tensor, optional
        Waveforms (batch, 1, samples) int8 ranges are calibrated on, e.g. real speech.
        Defaults to 8 chunks of 3 s of `speech_like` synthetic speech.

    Raises
    ------
    OnnxMismatchError
        If the graph differs from torch beyond `tolerance` (or its output's shape).
    ValueError
        If the model has no trunk to export.
    ImportError
        If onnx, onnxscript or onnxruntime is missing.
    """
    check_onnx_embedding(model, "onnxruntime-int8" if int8 else "onnxruntime")
    tolerance = default_tolerance(tolerance, int8, FP32_TOLERANCE, INT8_TOLERANCE)
    require("onnxruntime")  # before the export
    start = time.perf_counter()
    reference = reference_copy(torch_embedding(model))
    sample_rate = reference.audio.sample_rate
    with torch.inference_mode():
        example = reference.compute_fbank(speech_like(2, 2 * sample_rate, sample_rate, seed=2))
    # not strict: 4x faster to trace, and nothing in a ResNet needs strict tracing
    graph = to_onnx(FrameWiseTrunk(reference.resnet).eval(), example, input_name=INPUT_NAME,
                    output_name=OUTPUT_NAME, dynamic_axes=(0, 1), opset=opset, strict=False)
    if int8:
        if calibration is None:
            calibration = speech_like(CALIBRATION_CHUNKS,
                                      round(CALIBRATION_DURATION * sample_rate), sample_rate)
        with torch.inference_mode():
            fbank = reference.compute_fbank(calibration.to("cpu", torch.float32))
        graph = quantize_graph_int8_static(graph, [{INPUT_NAME: fbank.numpy()}])
    seconds = time.perf_counter() - start
    inputs = check_inputs(reference)
    measured = compare(inference_session(graph), reference, inputs)
    checked = measured["max_cosine_distance"] if int8 else measured["relative_diff"]
    if not checked <= tolerance:
        what = ("the embeddings' cosine distance" if int8 else
                "the frames' max abs difference relative to their largest value")
        raise OnnxMismatchError(
            f"The {'int8' if int8 else 'fp32'} ONNX trunk of the {type(model).__name__} "
            f"differs from torch by {checked:.3g} ({what}; frames max abs diff "
            f"{measured['max_abs_diff']:.3g}): expected at most tolerance={tolerance:g}."
        )
    return TrunkExport(onnx=graph, int8=int8, opset=opset, tolerance=tolerance,
                       checked_shapes=[tuple(x.shape) for x in inputs], seconds=seconds,
                       **measured)


class OnnxTrunk(nn.Module):
    """A speaker embedding's trunk whose `forward_frames` runs an ONNX graph

    `embedding_for_runtime` injects one in place of a copy's `resnet`: the embedding model
    keeps its class, filter banks and forward, and its trunk's frames come from ONNX Runtime.
    The torch trunk stays inside (`torch_trunk`): pooling and embedding layers
    (`forward_embedding`) run in torch, too short inputs too (fewer than 2 fbank frames, so
    that they fail or pass as in torch: how pyannote probes the shortest input), its other
    attributes (frame counts, receptive field, `embed_dim`) are read through, and its state
    dict is this module's under the same keys, so that the model's checkpoint is the torch
    model's.

    Parameters
    ----------
    trunk : nn.Module
        The torch trunk the graph was exported from (`resnet` of a WeSpeaker ResNet).
    export : TrunkExport
        The graph and how it was checked.
    runtime : str
        "onnxruntime" or "onnxruntime-int8".
    num_threads : int, optional
        ONNX Runtime intra-op threads. Defaults to torch's number at the first call.
    """

    def __init__(self, trunk: nn.Module, export: TrunkExport, runtime: str,
                 num_threads: int | None = None):
        super().__init__()
        self.torch_trunk = trunk
        self.export = export
        self.runtime = runtime
        self.num_threads = num_threads
        self.sessions = Sessions()
        self.register_state_dict_post_hook(_torch_trunk_keys)
        self.register_load_state_dict_pre_hook(_onnx_trunk_keys)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "torch_trunk":
                raise
            return getattr(self.torch_trunk, name)

    def session(self, device: torch.device | str = "cpu"):
        """The ONNX Runtime session that runs on `device` (created on first use)."""
        return self.sessions.get(self.export.onnx, device, self.num_threads)

    def forward_frames(self, fbank: torch.Tensor) -> torch.Tensor:
        """Frame-wise features of filter banks (batch, frames, features), by ONNX Runtime."""
        if fbank.shape[0] == 0 or fbank.shape[1] < 2:
            return self.torch_trunk.forward_frames(fbank)
        return run_trunk(self.session(fbank.device), fbank)

    def forward_embedding(self, frames: torch.Tensor, weights: torch.Tensor | None = None):
        """The torch trunk's pooling and embedding layers."""
        return self.torch_trunk.forward_embedding(frames, weights=weights)

    def forward(self, fbank: torch.Tensor, weights: torch.Tensor | None = None):
        """What the torch trunk's forward returns, its frames computed by ONNX Runtime."""
        return self.forward_embedding(self.forward_frames(fbank), weights=weights)


TORCH_TRUNK = "torch_trunk."


def _torch_trunk_keys(module, state_dict, prefix, local_metadata) -> None:
    # PREFIX.torch_trunk.KEY > PREFIX.KEY, in place and in order (the torch trunk's keys)
    for key in [key for key in state_dict if key.startswith(prefix + TORCH_TRUNK)]:
        state_dict[prefix + key[len(prefix + TORCH_TRUNK):]] = state_dict.pop(key)


def _onnx_trunk_keys(module, state_dict, prefix, *args) -> None:
    # PREFIX.KEY > PREFIX.torch_trunk.KEY: a torch trunk's state dict loads into an OnnxTrunk
    for key in [key for key in state_dict if key.startswith(prefix)
                and not key.startswith(prefix + TORCH_TRUNK)]:
        state_dict[prefix + TORCH_TRUNK + key[len(prefix):]] = state_dict.pop(key)


def runtime_of(model: nn.Module) -> str | None:
    """The ONNX runtime `model` runs its trunk with ("onnxruntime(-int8)"), None for torch."""
    trunk = getattr(model, "resnet", None)
    return trunk.runtime if isinstance(trunk, OnnxTrunk) else None


def torch_embedding(model: nn.Module) -> nn.Module:
    """`model` itself, or for a model of an ONNX runtime, a copy with its torch trunk back
    (the torch model it was made from: same class and state dict)."""
    if runtime_of(model) is None:
        return model
    plain = copy.deepcopy(model)
    plain.resnet = plain.resnet.torch_trunk
    return plain


def embedding_for_runtime(
    model: nn.Module,
    runtime: str | None,
    *,
    num_threads: int | None = None,
    tolerance: float | None = None,
    calibration: torch.Tensor | None = None,
) -> nn.Module:
    """The speaker embedding model a pipeline runs for `model` with `runtime`

    Parameters
    ----------
    model : Model
        Speaker embedding model, as loaded from its checkpoint.
    runtime : str or None
        One of deploy.runtime.EMBEDDING_RUNTIMES; None returns `model` as it is.
    num_threads : int, optional
        ONNX Runtime intra-op threads. Defaults to torch's number of threads at first call.
    tolerance, calibration : optional
        See `export_trunk`.

    Returns
    -------
    model : Model
        None or "torch": `model` itself (for a model of an ONNX runtime and "torch", the
        torch model it was made from). "onnxruntime(-int8)": `model` itself when it already
        runs with that runtime, else a copy of the same class whose trunk is an `OnnxTrunk`
        running a graph exported (and checked) now, in eval mode, on `model`'s device.

    Raises
    ------
    ValueError
        For an unknown runtime, or an ONNX runtime and a model without a trunk to export
        (e.g. XVectorMFCC), naming its class and what is expected.
    OnnxMismatchError
        If the exported graph does not match the torch model (see `export_trunk`).
    """
    check_embedding_runtime(runtime)
    if runtime is None:
        return model
    if runtime == "torch":
        return torch_embedding(model)
    if runtime_of(model) == runtime:
        return model
    source = torch_embedding(model)
    check_onnx_embedding(source, runtime)
    export = export_trunk(source, int8=runtime == "onnxruntime-int8", tolerance=tolerance,
                          calibration=calibration)
    log.info("embedding_runtime=%r: %s", runtime, export.summary())
    wrapped = copy.deepcopy(source)
    wrapped.resnet = OnnxTrunk(wrapped.resnet, export, runtime, num_threads)
    return wrapped.eval()


__all__ = ["EMBEDDING_RUNTIMES", "FrameWiseTrunk", "OnnxTrunk", "TrunkExport", "check_embedding_runtime",
           "check_onnx_embedding", "embedding_for_runtime", "export_trunk", "runtime_of",
           "speech_like", "torch_embedding"]
