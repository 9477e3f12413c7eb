"""The runtimes a pipeline can run its models with: one registry for both, config.yaml's
`segmentation_runtime` and `embedding_runtime`.

`REGISTRY` names each model's runtimes and what they make of it; `model_for_runtime(kind,
model, runtime)` makes it. The segmentation's runtimes are made here
(`segmentation_for_runtime`: a model of its own class for ONNX, deploy.model, a quantised or
folded copy for torch), the embedding's in deploy.embedding (`embedding_for_runtime`: the
torch model with an ONNX trunk injected).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from pyannote.audio import Model
from torch import nn

from ..settings import check_setting
from .embedding import EMBEDDING_RUNTIMES, check_embedding_runtime, embedding_for_runtime

# name -> what it does with the pipeline's segmentation model
RUNTIMES = {
    "torch": "the torch model, weight norm folded (fp32)",
    "torch-int8": "an int8 copy of the torch model (dynamic quantisation of Linear layers)",
    "onnxruntime": "an ONNX graph run by ONNX Runtime (CUDA provider when on a GPU)",
    "onnxruntime-int8": "an int8 ONNX graph (MatMul/Gemm dynamically quantised) run by "
                        "ONNX Runtime",
}

log = logging.getLogger(__name__)


def check_runtime(runtime: str | None, model: str = "segmentation") -> None:
    """Raise a ValueError unless `runtime` is one of `model`'s runtimes (or None)."""
    if model not in REGISTRY:
        raise ValueError(f"model={model!r}: expected one of {list(REGISTRY)}.")
    # the names are settings.py's too (which checks config.yaml files without torch)
    check_setting(f"{model}_runtime", runtime)


def segmentation_for_runtime(model: Model, runtime: str | None) -> Model:
    """The model a pipeline runs for `model` with `runtime`

    Parameters
    ----------
    model : Model
        Segmentation model as loaded from its checkpoint: a WavLMSegmentation, or an
        OnnxSegmentation (checkpoint holding an ONNX graph).
    runtime : str or None
        One of RUNTIMES; None returns `model` as it is.

    Returns
    -------
    model : Model
        "torch": `model` itself, weight norm folded in place (state dict unchanged);
        "torch-int8": an int8 copy; "onnxruntime(-int8)": `model` itself when it is an
        OnnxSegmentation of that precision, else an OnnxSegmentation exported (and checked)
        from it now, which takes a while: export the pipeline with that runtime instead
        (`export_pipeline(..., segmentation_runtime=...)`) to pay it once.
    """
    check_runtime(runtime)
    if runtime is None:
        return model
    from .model import OnnxSegmentation

    if isinstance(model, OnnxSegmentation):
        if runtime.startswith("torch"):
            raise ValueError(
                f"segmentation_runtime={runtime!r}, but the segmentation checkpoint holds an "
                "ONNX graph (OnnxSegmentation): expected 'onnxruntime' or 'onnxruntime-int8', "
                "or a torch checkpoint."
            )
        if runtime == "onnxruntime-int8" and not model.hparams.int8:
            from .onnx import quantize_graph_int8

            quantized = OnnxSegmentation(**{k: v for k, v in model.hparams.items()
                                            if k not in ("int8",)}, int8=True)
            quantized.specifications = model.specifications
            quantized.onnx_model = quantize_graph_int8(model.onnx_model)
            return quantized.eval()
        if runtime == "onnxruntime" and model.hparams.int8:
            raise ValueError(
                "segmentation_runtime='onnxruntime' (fp32), but the segmentation checkpoint "
                "holds an int8 ONNX graph: expected 'onnxruntime-int8'."
            )
        return model

    if runtime == "torch":
        from .inference import optimize_for_inference

        return optimize_for_inference(model)
    if runtime == "torch-int8":
        from .quantize import quantize_model_int8

        return quantize_model_int8(model)
    log.warning("Exporting the segmentation model to ONNX at load time (segmentation_runtime="
                "%r): export the pipeline with this runtime to do it once.", runtime)
    return OnnxSegmentation.from_model(model, int8=runtime == "onnxruntime-int8")


@dataclass(frozen=True)
class ModelRuntimes:
    """The runtimes of one of a pipeline's models."""

    runtimes: dict[str, str]  # name -> what it does with the model
    make: Callable[[nn.Module, str | None], nn.Module]  # (model, runtime) -> the model run


REGISTRY = {
    "segmentation": ModelRuntimes(RUNTIMES, segmentation_for_runtime),
    "embedding": ModelRuntimes(EMBEDDING_RUNTIMES, embedding_for_runtime),
}


def model_for_runtime(kind: str, model: nn.Module, runtime: str | None) -> nn.Module:
    """What a pipeline runs for its `kind` model ("segmentation", "embedding") with `runtime`
    (see `segmentation_for_runtime`, `embedding_for_runtime`)."""
    check_runtime(runtime, kind)
    return REGISTRY[kind].make(model, runtime)


__all__ = ["EMBEDDING_RUNTIMES", "REGISTRY", "ModelRuntimes", "RUNTIMES", "check_embedding_runtime",
           "check_runtime", "embedding_for_runtime", "model_for_runtime",
           "segmentation_for_runtime"]
