"""A WavLMSegmentation as an ONNX graph, checked against the torch model on export.

The graph takes `waveform` of shape (batch, 1, samples), 16 kHz float32, with dynamic batch
and length (at least two frames: 720 samples, 45 ms), and returns `log_probabilities` of
shape (batch, frames, classes), what the torch model's forward returns. It is traced
strictly (deploy.onnx says why), the positional convolution's weight norm folded first
(`reference_copy`); int8 graphs are dynamically quantised (`quantize_graph_int8`).

What runs it in a pipeline: `OnnxSegmentation` (deploy.model); which runtime a pipeline
takes: deploy.runtime.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..models.wavlm_segmentation import WavLMSegmentation
from .onnx import (
    DEFAULT_OPSET,
    GraphExport,
    OnnxMismatchError,
    default_tolerance,
    inference_session,
    measure,
    quantize_graph_int8,
    reference_copy,
    require,
    run_graph,
    to_onnx,
)

INPUT_NAME = "waveform"
OUTPUT_NAME = "log_probabilities"
# max |log p_onnx - log p_torch| accepted for fp32 graphs: what separates a correct graph
# (1e-6 to 1e-5 measured, float rounding) from a wrong one
FP32_TOLERANCE = 1e-4
# max |p_int8 - p_torch| (probabilities) accepted for int8 graphs, see docs/deployment.md
INT8_TOLERANCE = 0.1


@dataclass(kw_only=True)
class OnnxExport(GraphExport):
    """An exported segmentation graph and how closely it matches its torch model."""

    max_abs_diff: float  # max |log p_onnx - log p_torch| over the checked inputs
    max_probability_diff: float  # max |p_onnx - p_torch|

    def summary(self) -> str:
        kind = "int8 (dynamic quantisation)" if self.int8 else "fp32"
        checked = "measured on probabilities" if self.int8 else "measured on log-probabilities"
        return (
            f"ONNX {kind}, opset {self.opset}, {len(self.onnx) / 1e6:.1f} MB; against torch "
            f"on inputs {self.checked_shapes}: max abs diff {self.max_abs_diff:.3g} "
            f"(log-probabilities), {self.max_probability_diff:.3g} (probabilities); "
            f"tolerance {self.tolerance:g} {checked}; sha256 {self.sha256}"
        )


def check_segmentation(model) -> None:
    """Raise unless `model` is a WavLMSegmentation built for a task (what can be exported)."""
    if not isinstance(model, WavLMSegmentation):
        raise TypeError(
            f"model is a {type(model).__name__}: expected a WavLMSegmentation (pruned or not)."
        )
    try:
        model.specifications  # noqa: B018
    except Exception as error:
        raise ValueError(
            "model has no specifications: expected a model built for a task (a checkpoint, or "
            "model.specifications = ...; model.build())."
        ) from error


def check_inputs(model, batch_size: int = 2, seed: int = 0) -> list[torch.Tensor]:
    """Waveforms an export is checked on: two batch sizes, two lengths

    returns: [(batch_size, 1, chunk samples), (1, 1, about 0.6 chunk + 137 samples)], the
        chunk being the model's training duration
    """
    num_samples = round(model.specifications.duration * model.hparams.sample_rate)
    other = max(model.receptive_field_size(1), round(0.6 * num_samples) + 137)
    generator = torch.Generator().manual_seed(seed)
    return [
        0.1 * torch.randn(batch_size, 1, num_samples, generator=generator),
        0.1 * torch.randn(1, 1, other, generator=generator),
    ]


def min_samples(model) -> int:
    """Shortest input of an exported graph: two frames (720 samples for WavLM)

    torch.export specialises a one-frame input (a size-1 dimension broadcasts), so the
    graph is exported for inputs of two frames or more.
    """
    return model.receptive_field_size(2)


def run_session(session, waveforms: torch.Tensor) -> torch.Tensor:
    """Log-probabilities computed by an ONNX Runtime session

    waveforms (Tensor): shape (batch, 1, samples)
    returns (Tensor): shape (batch, frames, classes), on waveforms' device
    """
    return run_graph(session, waveforms, INPUT_NAME, OUTPUT_NAME)


def compare(session, model, inputs: list[torch.Tensor]) -> tuple[float, float]:
    """Max abs differences (log-probabilities, probabilities) between a session and a model."""
    measured = measure(
        inputs, model, lambda waveforms: run_session(session, waveforms),
        lambda actual, expected: {"log": (actual - expected).abs().max(),
                                  "probability": (actual.exp() - expected.exp()).abs().max()},
        "ONNX output")
    return measured["log"], measured["probability"]


def export_onnx(
    model,
    path: str | os.PathLike | None = None,
    *,
    int8: bool = False,
    opset: int = DEFAULT_OPSET,
    tolerance: float | None = None,
) -> OnnxExport:
    """Export a WavLMSegmentation to ONNX (optionally int8), checked against the model

    Parameters
    ----------
    model : WavLMSegmentation
        Pruned or not, built for a task. Left untouched (a copy is exported).
    path : path, optional
        Where to write the .onnx file (atomically). Defaults to writing nothing.
    int8 : bool, optional
        Quantise MatMul/Gemm weights to int8 (ONNX Runtime dynamic quantisation).
    opset : int, optional
        ONNX opset. Defaults to 20 (see deploy.onnx).
    tolerance : float, optional
        Largest accepted difference with the torch model, on log-probabilities for fp32
        (default 1e-4) and on probabilities for int8 (default 0.1).

    Returns
    -------
    export : OnnxExport
        The graph's bytes and its measured difference with the torch model on a batch of
        2 chunks of the training duration and a batch of 1 shorter input.

    Raises
    ------
    OnnxMismatchError
        If the graph's output differs from the model's beyond `tolerance`.
    ImportError
        If onnx, onnxscript or onnxruntime is missing.
    """
    check_segmentation(model)
    tolerance = default_tolerance(tolerance, int8, FP32_TOLERANCE, INT8_TOLERANCE)
    require("onnxruntime")  # before the (long) export
    reference = reference_copy(model)
    inputs = check_inputs(reference)
    graph = to_onnx(reference, inputs[0], input_name=INPUT_NAME, output_name=OUTPUT_NAME,
                    dynamic_axes=(0, 2), opset=opset)
    if int8:
        graph = quantize_graph_int8(graph)
    session = inference_session(graph)
    log_diff, probability_diff = compare(session, reference, inputs)
    measured = probability_diff if int8 else log_diff
    if not measured <= tolerance:
        raise OnnxMismatchError(
            f"The ONNX graph differs from the torch model by {measured:.3g} (max abs, "
            f"{'probabilities' if int8 else 'log-probabilities'}): expected at most "
            f"tolerance={tolerance:g}."
        )
    export = OnnxExport(
        onnx=graph, int8=int8, opset=opset, max_abs_diff=log_diff,
        max_probability_diff=probability_diff, tolerance=tolerance,
        checked_shapes=[tuple(x.shape) for x in inputs],
    )
    if path is not None:
        export.save(path)
    return export
