"""The runtimes a pipeline can run its segmentation model with (config.yaml's
`segmentation_runtime`)."""

from __future__ import annotations

import logging

from pyannote.audio import Model

# name -> what it does with the pipeline's segmentation model
RUNTIMES = {
    "torch": "the torch model, weight norm folded (fp32)",
    "torch-int8": "an int8 copy of the torch model (dynamic quantisation of Linear layers)",
    "onnxruntime": "an ONNX graph run by ONNX Runtime (CUDA provider when on a GPU)",
    "onnxruntime-int8": "an int8 ONNX graph (MatMul/Gemm dynamically quantised) run by "
                        "ONNX Runtime",
}

log = logging.getLogger(__name__)


def check_runtime(runtime: str | None) -> None:
    if runtime is not None and runtime not in RUNTIMES:
        raise ValueError(
            f"segmentation_runtime={runtime!r}: expected one of {list(RUNTIMES)} (or None: "
            "the checkpoint's own runtime)."
        )


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
            from .onnx import quantize_int8

            quantized = OnnxSegmentation(**{k: v for k, v in model.hparams.items()
                                            if k not in ("int8",)}, int8=True)
            quantized.specifications = model.specifications
            quantized.onnx_model = quantize_int8(model.onnx_model)
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
        from .quantize import quantize_int8

        return quantize_int8(model)
    log.warning("Exporting the segmentation model to ONNX at load time (segmentation_runtime="
                "%r): export the pipeline with this runtime to do it once.", runtime)
    return OnnxSegmentation.from_model(model, int8=runtime == "onnxruntime-int8")
