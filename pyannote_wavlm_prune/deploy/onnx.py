"""Export of a WavLMSegmentation to ONNX, checked against the torch model on export.

The ONNX graph takes `waveform` of shape (batch, 1, samples), 16 kHz float32, with dynamic
batch and length (at least two frames: 720 samples, 45 ms), and returns `log_probabilities`
of shape (batch, frames, classes), what the torch model's forward returns.

How it is exported (torch 2.11, each choice forced by a trap):

- torch's dynamo exporter (`torch.export` then ONNX translation). The legacy TorchScript
  exporter bakes the number of frames into the Conformer's `nn.MultiheadAttention` reshapes,
  so its graph fails on any other input length;
- `torch.export.export(strict=True)` directly: the non-strict mode that `torch.onnx.export`
  tries first fails on the Conformer's data-dependent `lengths.max().item()`, and the retry
  doubles the export time;
- scaled_dot_product_attention traced with its math backend: traced with the CPU flash
  kernel, the graph records a `view` that is only valid for that kernel's output layout,
  and the ONNX decomposition (which uses the math layout) then fails on it;
- the positional convolution's weight norm is folded first (`optimize_for_inference`);
- opset 20, where GELU is one `Gelu` node: at opset 18 torch writes it as five element-wise
  nodes (Div, Erf, Add, Mul, Mul) in an order ONNX Runtime's GELU fusion does not match, and
  the CNN's GELUs run on the longest tensors of the model.

How it runs (`inference_session`, measured with benchmarks/bench_deploy.py): on CPU, ONNX
Runtime's SkipLayerNormalization fusion is turned off. Its CPU kernel took 1.10 ms where
the Add and LayerNormalization it replaces took 0.30 ms ((1, 399, 768) tensors, 2 threads,
onnxruntime 1.32, benchmarks/bench_ort_kernels.py), and ONNX Runtime makes 29 such fusions
in the s80 graph.

onnx, onnxscript and onnxruntime are optional dependencies (`pip install
pyannote-wavlm-prune[onnx]`): they are imported inside the functions that need them.
"""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from ..files import write_atomically
from ..models.wavlm_segmentation import WavLMSegmentation
from .inference import optimize_for_inference

INPUT_NAME = "waveform"
OUTPUT_NAME = "log_probabilities"
DEFAULT_OPSET = 20
# max |log p_onnx - log p_torch| accepted for fp32 graphs: what separates a correct graph
# (1e-6 to 1e-5 measured, float rounding) from a wrong one
FP32_TOLERANCE = 1e-4
# max |p_int8 - p_torch| (probabilities) accepted for int8 graphs, see docs/deployment.md
INT8_TOLERANCE = 0.1
INSTALL_HINT = "pip install 'pyannote-wavlm-prune[onnx]' (onnx, onnxscript, onnxruntime)"


class OnnxMismatchError(ValueError):
    """An ONNX graph whose output differs from its torch model's beyond the tolerance."""


class OnnxDigestError(ValueError):
    """An ONNX graph whose bytes are not those its recorded digest was computed from."""


# An exported graph carries the sha256 of its bytes in its own metadata_props, appended as
# the last field of the serialized ModelProto (protobuf lets a field come after the others):
# ONNX Runtime and onnx read the file as the graph plus one metadata entry, and the digest is
# checked by hashing what comes before it, before the graph is handed to ONNX Runtime.
DIGEST_KEY = "pyannote_wavlm_prune.sha256"
# the encoded entry: field 14 (metadata_props, length-delimited) holding
# StringStringEntryProto {1: key, 2: value}, the value 64 hexadecimal digits
_ENTRY = b"\x0a" + bytes([len(DIGEST_KEY)]) + DIGEST_KEY.encode() + b"\x12\x40"
_DIGEST_PREFIX = b"\x72" + bytes([len(_ENTRY) + 64]) + _ENTRY
DIGEST_TRAILER_SIZE = len(_DIGEST_PREFIX) + 64
_undigested: set[str] = set()


def seal(graph: bytes) -> bytes:
    """`graph` with the sha256 of its bytes appended as metadata (what is written to files)."""
    return graph + _DIGEST_PREFIX + hashlib.sha256(graph).hexdigest().encode()


def unseal(data: bytes, name: str, warn: bool = True) -> bytes:
    """The graph `seal` wrote into `data`, its digest checked; `data` itself for a graph
    written before graphs carried one (said once per `name`)

    Raises OnnxDigestError, naming `name` (the file), when the bytes differ from those the
    digest was computed from: altered or corrupted. `warn`: say that a graph without a
    digest is loaded unchecked (not for bytes that never were a file).
    """
    trailer = data[-DIGEST_TRAILER_SIZE:]
    # sealed: any of the record's parts still stands, so that no one altered byte makes a
    # sealed graph read as one written before digests
    sealed = (trailer.startswith(_DIGEST_PREFIX) or _is_hex_digest(data[-64:])
              or DIGEST_KEY.encode() in data)
    if not sealed:
        if warn and name not in _undigested:
            _undigested.add(name)
            warnings.warn(f"{name} carries no sha256 digest (written before exported graphs did): "
                          "loaded unchecked; export it again to have it checked.", stacklevel=3)
        return data
    if not trailer.startswith(_DIGEST_PREFIX):
        raise OnnxDigestError(
            f"{name} does not end with the sha256 record its export wrote: the graph was altered "
            "or rewritten since (expected the bytes export_onnx wrote; export it again).")
    graph = data[:-DIGEST_TRAILER_SIZE]
    expected = trailer[len(_DIGEST_PREFIX):].decode("ascii", "replace")
    found = hashlib.sha256(graph).hexdigest()
    if found != expected:
        raise OnnxDigestError(
            f"{name} is not the graph that was exported: its sha256 is {found}, its export "
            f"recorded {expected} (altered or corrupted; export it again).")
    return graph


def _is_hex_digest(data: bytes) -> bool:
    return len(data) == 64 and all(byte in b"0123456789abcdef" for byte in data)


def read_graph(path: str | os.PathLike) -> bytes:
    """The graph of an .onnx file, its digest checked (see `unseal`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {path} does not exist.")
    return unseal(path.read_bytes(), f"ONNX file {path}")


def require(name: str) -> ModuleType:
    """Import the optional dependency `name` (onnx, onnxscript, onnxruntime), or fail clearly."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ImportError(
            f"{name} is not installed: ONNX export and inference need it. Install it with "
            f"{INSTALL_HINT}."
        ) from error


@dataclass
class OnnxExport:
    """An exported ONNX graph and how closely it matches its torch model."""

    onnx: bytes
    int8: bool
    opset: int
    max_abs_diff: float  # max |log p_onnx - log p_torch| over the checked inputs
    max_probability_diff: float  # max |p_onnx - p_torch|
    tolerance: float
    checked_shapes: list[tuple[int, int, int]]

    def save(self, path: str | os.PathLike) -> Path:
        """Write the graph, carrying its digest (`seal`), to `path` (temporary file beside
        it, then renamed into place)."""
        return write_atomically(path, lambda file: file.write(seal(self.onnx)))

    @property
    def sha256(self) -> str:
        """The digest a saved graph carries and is checked against when loaded."""
        return hashlib.sha256(self.onnx).hexdigest()

    def summary(self) -> str:
        kind = "int8 (dynamic quantisation)" if self.int8 else "fp32"
        checked = "measured on probabilities" if self.int8 else "measured on log-probabilities"
        return (
            f"ONNX {kind}, opset {self.opset}, {len(self.onnx) / 1e6:.1f} MB; against torch "
            f"on inputs {self.checked_shapes}: max abs diff {self.max_abs_diff:.3g} "
            f"(log-probabilities), {self.max_probability_diff:.3g} (probabilities); "
            f"tolerance {self.tolerance:g} {checked}; sha256 {self.sha256}"
        )


def _check_segmentation(model) -> None:
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


def reference_copy(model):
    """A copy of `model` on CPU, fp32, eval mode, weight norm folded: what is exported."""
    return optimize_for_inference(copy.deepcopy(model).to("cpu", torch.float32))


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


def _to_onnx(model, example: torch.Tensor, opset: int, *, input_name: str = INPUT_NAME,
             output_name: str = OUTPUT_NAME, dynamic_axes: tuple[int, ...] = (0, 2),
             strict: bool = True) -> bytes:
    """The ONNX graph of `model(example)`, its input's `dynamic_axes` dynamic

    Defaults are WavLM's: a (batch, 1, samples) waveform traced strictly (module
    docstring). deploy.embedding exports a speaker embedding's ResNet trunk, whose
    (batch, frames, features) input has dynamic axes (0, 1), non-strict (4x faster to
    trace, and nothing in a ResNet needs strict tracing).
    """
    require("onnx")
    require("onnxscript")  # the dynamo exporter's translation library
    from torch.export import Dim
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dynamic_shapes = ({axis: Dim.AUTO for axis in dynamic_axes},)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        program = torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes,
                                      strict=strict)
        onnx_program = torch.onnx.export(
            program, (example,), input_names=[input_name], output_names=[output_name],
            opset_version=opset, dynamo=True, optimize=True, verbose=False,
        )
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "model.onnx"
        onnx_program.save(path, external_data=False)
        return path.read_bytes()


def quantize_int8(onnx_model: bytes) -> bytes:
    """The graph with its MatMul/Gemm weights quantised to int8 (ONNX Runtime's dynamic
    quantisation: activations are quantised on the fly, per tensor)

    Convolutions stay fp32, as torch's `quantize_dynamic` leaves them: on WavLM's positional
    convolution, ONNX Runtime's ConvInteger with int8 weights was 4x slower than fp32 (with
    uint8 weights 1.3x faster, its accuracy unmeasured; benchmarks/bench_ort_kernels.py).
    Products of two activations (attention scores and their weighted sums) stay fp32 too
    (`MatMulConstBOnly`): quantising them bought no speed.
    """
    require("onnx")
    quantization = require("onnxruntime.quantization")
    with tempfile.TemporaryDirectory() as directory:
        source, target = Path(directory) / "fp32.onnx", Path(directory) / "int8.onnx"
        source.write_bytes(onnx_model)
        quantization.quantize_dynamic(
            source, target, op_types_to_quantize=["MatMul", "Gemm"],
            weight_type=quantization.QuantType.QInt8,
            extra_options={"MatMulConstBOnly": True},
        )
        return target.read_bytes()


def inference_session(onnx_model: bytes | str | os.PathLike, device: str | torch.device = "cpu",
                      num_threads: int | None = None):
    """An onnxruntime.InferenceSession for `onnx_model` (bytes or a file)

    Parameters
    ----------
    onnx_model : bytes or path
        The graph, or an .onnx file (its digest checked first, see `read_graph`).
    device : str or torch.device, optional
        "cuda" uses ONNX Runtime's CUDA execution provider when it is available (the
        onnxruntime-gpu package), CPU otherwise. Defaults to "cpu".
    num_threads : int, optional
        Intra-op threads. Defaults to torch's number of threads, so that both runtimes are
        compared on the same cores.
    """
    onnxruntime = require("onnxruntime")
    if not isinstance(onnx_model, bytes):
        onnx_model = read_graph(onnx_model)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = num_threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda":
        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
    # the fused CPU kernel is slower than what it replaces (module docstring)
    disabled = ["SkipLayerNormFusion"] if providers == ["CPUExecutionProvider"] else []
    return onnxruntime.InferenceSession(onnx_model, sess_options=options, providers=providers,
                                        disabled_optimizers=disabled)


def run_session(session, waveforms: torch.Tensor) -> torch.Tensor:
    """Log-probabilities computed by an ONNX Runtime session

    waveforms (Tensor): shape (batch, 1, samples)
    returns (Tensor): shape (batch, frames, classes), on waveforms' device
    """
    array = waveforms.detach().to("cpu", torch.float32).numpy()
    (output,) = session.run([OUTPUT_NAME], {INPUT_NAME: array})
    return torch.from_numpy(output).to(waveforms.device)


def compare(session, model, inputs: list[torch.Tensor]) -> tuple[float, float]:
    """Max abs differences (log-probabilities, probabilities) between a session and a model."""
    log_diff, probability_diff = 0.0, 0.0
    for waveforms in inputs:
        with torch.inference_mode():
            expected = model(waveforms)
        actual = run_session(session, waveforms)
        if actual.shape != expected.shape:
            raise OnnxMismatchError(
                f"ONNX output of shape {tuple(actual.shape)} for input "
                f"{tuple(waveforms.shape)}: expected {tuple(expected.shape)}, the torch "
                "model's."
            )
        log_diff = max(log_diff, (actual - expected).abs().max().item())
        probability_diff = max(probability_diff,
                               (actual.exp() - expected.exp()).abs().max().item())
    return log_diff, probability_diff


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
        ONNX opset. Defaults to 20 (see the module docstring).
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
    _check_segmentation(model)
    if tolerance is None:
        tolerance = INT8_TOLERANCE if int8 else FP32_TOLERANCE
    if not tolerance > 0:
        raise ValueError(f"tolerance={tolerance}: expected a positive number.")
    require("onnxruntime")  # before the (long) export
    reference = reference_copy(model)
    inputs = check_inputs(reference)
    graph = _to_onnx(reference, inputs[0], opset)
    if int8:
        graph = quantize_int8(graph)
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
