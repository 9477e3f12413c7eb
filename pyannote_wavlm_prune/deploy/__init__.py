"""Deployment of segmentation and speaker embedding models: ONNX export, ONNX Runtime,
int8, inference folding.

- `optimize_for_inference(model)`: folds the positional convolution's weight norm, in place
  (state dicts unchanged);
- `export_onnx(model, path, int8=...)`: an ONNX graph checked against the torch model;
- `OnnxSegmentation`: a pyannote Model computed by ONNX Runtime, whose checkpoint carries
  its graph (pipelines load it like any segmentation model);
- `quantize_model_int8(model)` (also `quantize_int8`): an int8 copy for torch inference
  (dynamic quantisation of Linear); `quantize_graph_int8(graph)`: an int8 ONNX graph;
- `segmentation_for_runtime(model, runtime)`: what a pipeline's `segmentation_runtime`
  option ("torch", "torch-int8", "onnxruntime", "onnxruntime-int8") makes of its model;
- `embedding_for_runtime(model, runtime)`: what a pipeline's `embedding_runtime` option
  ("torch", "onnxruntime", "onnxruntime-int8") makes of its speaker embedding (a WeSpeaker
  ResNet's trunk run by ONNX Runtime, fp32 or static int8);
- `model_for_runtime(kind, model, runtime)`: either, from one registry (`deploy.runtime`).

The ONNX kit both models' exports are built on (export, digest, sessions, checks against
torch, int8) is `deploy.onnx`; `deploy.segmentation` and `deploy.embedding` say what of
each model is exported and how it is checked.

onnx, onnxscript and onnxruntime are optional (`pip install pyannote-wavlm-prune[onnx]`) and
imported only by the functions that need them; importing this package does not need them.
"""

from .. import lazy_exports

# public name -> module that defines it (imported on first use)
_EXPORTS = {
    "optimize_for_inference": "pyannote_wavlm_prune.deploy.inference",
    "export_onnx": "pyannote_wavlm_prune.deploy.segmentation",
    "OnnxExport": "pyannote_wavlm_prune.deploy.segmentation",
    "OnnxMismatchError": "pyannote_wavlm_prune.deploy.onnx",
    "OnnxSegmentation": "pyannote_wavlm_prune.deploy.model",
    "quantize_int8": "pyannote_wavlm_prune.deploy.quantize",
    "quantize_model_int8": "pyannote_wavlm_prune.deploy.quantize",
    "quantize_graph_int8": "pyannote_wavlm_prune.deploy.onnx",
    "RUNTIMES": "pyannote_wavlm_prune.deploy.runtime",
    "segmentation_for_runtime": "pyannote_wavlm_prune.deploy.runtime",
    "EMBEDDING_RUNTIMES": "pyannote_wavlm_prune.deploy.embedding",
    "embedding_for_runtime": "pyannote_wavlm_prune.deploy.embedding",
    "model_for_runtime": "pyannote_wavlm_prune.deploy.runtime",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
