"""The ONNX kit both deployed models are built on: export, digest, session, check against
torch, int8.

A model's runtime module (`segmentation`, `embedding`) says what of its model is exported,
its input and output names, the inputs it is checked on and what "close enough" means; this
module does the rest, the same way for both:

- `to_onnx`: the graph of a torch module, dynamic along some input axes;
- `seal` / `unseal` / `read_graph`: every graph written carries the sha256 of its bytes,
  checked before ONNX Runtime sees it;
- `inference_session`, `Sessions`, `run_graph`: ONNX Runtime sessions, one per device type,
  created on first use, never copied or pickled;
- `reference_copy`, `measure`, `GraphExport`: the torch copy a graph is checked against, the
  largest differences between the two over a few inputs, and the record of an export;
- `quantize_graph_int8` (dynamic: MatMul/Gemm weights int8, activations quantised on the
  fly) and `quantize_graph_int8_static` (QDQ, ranges calibrated on given inputs).

How graphs are exported (torch 2.11, each choice forced by a trap):

- torch's dynamo exporter (`torch.export` then ONNX translation). The legacy TorchScript
  exporter bakes the number of frames into the Conformer's `nn.MultiheadAttention` reshapes,
  so its graph fails on any other input length;
- `torch.export.export` called directly, strict where the model needs it (see `to_onnx`):
  the non-strict mode that `torch.onnx.export` tries first fails on the Conformer's
  data-dependent `lengths.max().item()`, and the retry doubles the export time;
- scaled_dot_product_attention traced with its math backend: traced with the CPU flash
  kernel, the graph records a `view` that is only valid for that kernel's output layout,
  and the ONNX decomposition (which uses the math layout) then fails on it;
- opset 20, where GELU is one `Gelu` node: at opset 18 torch writes it as five element-wise
  nodes (Div, Erf, Add, Mul, Mul) in an order ONNX Runtime's GELU fusion does not match, and
  WavLM's CNN runs its GELUs on the longest tensors of the model.

How graphs run (`inference_session`, measured with benchmarks/bench_deploy.py): on CPU, ONNX
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
import importlib
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ..files import write_atomically
from .inference import optimize_for_inference

DEFAULT_OPSET = 20
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
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ImportError(
            f"{name} is not installed: ONNX export and inference need it. Install it with "
            f"{INSTALL_HINT}."
        ) from error


# --- export --------------------------------------------------------------------------------


def to_onnx(module: nn.Module, example: torch.Tensor, *, input_name: str, output_name: str,
            dynamic_axes: tuple[int, ...], opset: int = DEFAULT_OPSET,
            strict: bool = True) -> bytes:
    """The ONNX graph of `module(example)`, its input's `dynamic_axes` dynamic

    Parameters
    ----------
    module : nn.Module
        What is exported, in eval mode (a `reference_copy`).
    example : Tensor
        An input it is traced on; its sizes along `dynamic_axes` are not baked in.
    input_name, output_name : str
        Names of the graph's one input and the output it is run for.
    strict : bool, optional
        Trace with `torch.export`'s strict mode (TorchDynamo): WavLM needs it (module
        docstring); a ResNet does not, and traces 4x faster without.
    """
    require("onnx")
    require("onnxscript")  # the dynamo exporter's translation library
    from torch.export import Dim
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dynamic_shapes = ({axis: Dim.AUTO for axis in dynamic_axes},)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        program = torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes,
                                      strict=strict)
        onnx_program = torch.onnx.export(
            program, (example,), input_names=[input_name], output_names=[output_name],
            opset_version=opset, dynamo=True, optimize=True, verbose=False,
        )
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "model.onnx"
        onnx_program.save(path, external_data=False)
        return path.read_bytes()


def reference_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` on CPU, fp32, eval mode, weight norm folded: what is exported and
    what its graph is checked against (`model` is left untouched)."""
    return optimize_for_inference(copy.deepcopy(model).to("cpu", torch.float32))


def default_tolerance(tolerance: float | None, int8: bool, fp32_default: float,
                      int8_default: float) -> float:
    """`tolerance`, or the default of the graph's precision; a ValueError unless positive."""
    if tolerance is None:
        tolerance = int8_default if int8 else fp32_default
    if not tolerance > 0:
        raise ValueError(f"tolerance={tolerance}: expected a positive number.")
    return tolerance


# --- int8 ----------------------------------------------------------------------------------


def quantize_graph_int8(graph: bytes) -> bytes:
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
        source.write_bytes(graph)
        quantization.quantize_dynamic(
            source, target, op_types_to_quantize=["MatMul", "Gemm"],
            weight_type=quantization.QuantType.QInt8,
            extra_options={"MatMulConstBOnly": True},
        )
        return target.read_bytes()


# its former name, which deploy.quantize gave a function of Modules too: kept for code using it
quantize_int8 = quantize_graph_int8


def quantize_graph_int8_static(graph: bytes, calibration: Iterable[dict[str, Any]]) -> bytes:
    """The graph statically quantised to int8 (QDQ), ranges calibrated on `calibration`

    Activations uint8, weights int8 per output channel, min-max ranges: ONNX Runtime's CPU
    defaults for convolutions, which it fuses into QLinearConv (deploy.embedding says why
    not dynamic quantisation for a ResNet). The graph is first pre-processed (shape
    inference) as onnxruntime.quantization recommends.

    calibration: the graph's inputs, each {input name: numpy array}
    """
    require("onnx")
    quantization = require("onnxruntime.quantization")

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self.batches = iter(list(calibration))

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as directory:
        source = Path(directory) / "fp32.onnx"
        prepared, target = Path(directory) / "prepared.onnx", Path(directory) / "int8.onnx"
        source.write_bytes(graph)
        quantization.quant_pre_process(str(source), str(prepared))
        quantization.quantize_static(
            prepared, target, Reader(), quant_format=quantization.QuantFormat.QDQ,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8, per_channel=True,
            calibrate_method=quantization.CalibrationMethod.MinMax,
        )
        return target.read_bytes()


# --- sessions ------------------------------------------------------------------------------


def inference_session(graph: bytes | str | os.PathLike, device: str | torch.device = "cpu",
                      num_threads: int | None = None):
    """An onnxruntime.InferenceSession for `graph` (bytes or a file)

    Parameters
    ----------
    graph : bytes or path
        The graph, or an .onnx file (its digest checked first, see `read_graph`).
    device : str or torch.device, optional
        "cuda" uses ONNX Runtime's CUDA execution provider when it is available (the
        onnxruntime-gpu package), CPU otherwise. Defaults to "cpu".
    num_threads : int, optional
        Intra-op threads. Defaults to torch's number of threads, so that both runtimes are
        compared on the same cores.
    """
    onnxruntime = require("onnxruntime")
    if not isinstance(graph, bytes):
        graph = read_graph(graph)
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
    return onnxruntime.InferenceSession(graph, sess_options=options, providers=providers,
                                        disabled_optimizers=disabled)


class Sessions:
    """ONNX Runtime sessions of one graph, one per device type, created on first use

    Sessions cannot be copied or pickled: a copy or an unpickled `Sessions` starts empty, so
    that the models holding one copy and pickle as plain objects.
    """

    def __init__(self):
        self._by_device: dict[str, Any] = {}

    def get(self, graph: bytes, device: torch.device | str = "cpu",
            num_threads: int | None = None):
        """The session that runs `graph` on `device` (see `inference_session`)."""
        device = torch.device(device)
        if device.type not in self._by_device:
            self._by_device[device.type] = inference_session(graph, device=device,
                                                             num_threads=num_threads)
        return self._by_device[device.type]

    def __getstate__(self):
        return {"_by_device": {}}


def run_graph(session, inputs: torch.Tensor, input_name: str, output_name: str) -> torch.Tensor:
    """`output_name` computed by an ONNX Runtime session from `inputs`, on inputs' device."""
    array = inputs.detach().to("cpu", torch.float32).contiguous().numpy()
    (output,) = session.run([output_name], {input_name: array})
    return torch.from_numpy(output).to(inputs.device)


# --- checks against torch ------------------------------------------------------------------


def measure(inputs: Iterable[torch.Tensor], torch_output: Callable[[torch.Tensor], torch.Tensor],
            graph_output: Callable[[torch.Tensor], torch.Tensor],
            differences: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]],
            what: str) -> dict[str, float]:
    """The largest of each of `differences(graph's, torch's)` over `inputs`

    torch_output, graph_output: what torch and the graph compute from one input
    what: the graph's output, as error messages name it ("ONNX output")
    raises OnnxMismatchError if an output's shape is not torch's
    """
    measured: dict[str, float] = {}
    for x in inputs:
        with torch.inference_mode():
            expected = torch_output(x)
        actual = graph_output(x)
        if actual.shape != expected.shape:
            raise OnnxMismatchError(
                f"{what} of shape {tuple(actual.shape)} for input {tuple(x.shape)}: expected "
                f"{tuple(expected.shape)}, the torch model's."
            )
        with torch.inference_mode():
            found = differences(actual, expected)
        for name, value in found.items():
            measured[name] = max(measured.get(name, 0.0), value.item())
    return measured


@dataclass(kw_only=True)
class GraphExport:
    """An exported ONNX graph, checked against its torch model: what both exports record."""

    onnx: bytes
    int8: bool
    opset: int
    tolerance: float
    checked_shapes: list[tuple[int, ...]]

    def save(self, path: str | os.PathLike) -> Path:
        """Write the graph, carrying its digest (`seal`), to `path` (temporary file beside
        it, then renamed into place)."""
        return write_atomically(path, lambda file: file.write(seal(self.onnx)))

    @property
    def sha256(self) -> str:
        """The digest a saved graph carries and is checked against when loaded."""
        return hashlib.sha256(self.onnx).hexdigest()


# Names this module had when it exported the segmentation alone, now deploy.segmentation's:
# still importable from here for code written then. Looked up by name on first use, not
# imported: deploy.segmentation is built on this module.
MOVED_TO_SEGMENTATION = ("export_onnx", "OnnxExport", "check_inputs", "min_samples",
                         "run_session", "compare", "FP32_TOLERANCE", "INT8_TOLERANCE",
                         "INPUT_NAME", "OUTPUT_NAME")


def __getattr__(name: str):
    if name in MOVED_TO_SEGMENTATION:
        warnings.warn(f"pyannote_wavlm_prune.deploy.onnx.{name} is deprecated: import it from "
                      "pyannote_wavlm_prune.deploy.segmentation.", DeprecationWarning,
                      stacklevel=2)
        return getattr(importlib.import_module("pyannote_wavlm_prune.deploy.segmentation"),
                       name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
