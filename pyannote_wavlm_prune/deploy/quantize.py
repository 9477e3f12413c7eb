"""int8 dynamic quantisation of a segmentation model for torch inference.

`quantize_model_int8(model)` returns a copy whose Linear layers hold int8 weights and quantise their
input on the fly (torch.ao.quantization.quantize_dynamic): WavLM's projections and FFNs, the
back end's projection, Conformer FFNs and classifier. Convolutions stay fp32. Our pruned
attention modules read their projections through their modules, so they keep working, as do
the stock attentions of HuBERT and wav2vec 2.0; stock transformers `WavLMAttention` reads
`q_proj.bias` directly and breaks once quantised (`Architecture.stock_attention_quantizes`),
so an unpruned model built of such modules is first rebuilt with its full structure (our
SDPA attention, same weights, same state dict). The quantised copy is for inference only: its
state dict is not a pyannote checkpoint, save the fp32 model instead.

torch's dynamic int8 kernels exist on CPU only: the copy stays on CPU when moved (a pipeline
moved to a GPU, say; a warning says so) and takes inputs on any device, returning its output
on the input's device.

For ONNX Runtime's int8 graphs see `onnx.quantize_graph_int8`.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from ..frontends.architectures import ARCHITECTURES
from ..frontends.structure import Structure
from ..models.wavlm_segmentation import WavLMSegmentation
from .inference import optimize_for_inference

log = logging.getLogger(__name__)


class _StaysOnCPU:
    """Mixin of the int8 copy's class: moves are ignored, inputs go to CPU, outputs come back"""

    def _apply(self, fn, recurse=True):  # what .to(), .cuda(), .half() ... go through
        probe = fn(torch.zeros(()))
        if probe.device.type != "cpu" or probe.dtype != torch.float32:
            log.warning("The torch-int8 segmentation model stays on CPU in float32 (torch's "
                        "dynamic int8 kernels are CPU-only); on a GPU, use the 'torch' or "
                        "'onnxruntime' runtime.")
        return self

    def __call__(self, waveforms: torch.Tensor, *args, **kwargs):
        output = super().__call__(waveforms.to("cpu"), *args, **kwargs)
        return output.to(waveforms.device)


# stock attention modules that break once their Linears are quantised
_BREAKING = tuple(architecture.stock_attention for architecture in ARCHITECTURES.values()
                  if not architecture.stock_attention_quantizes)


def _stock_attention(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, _BREAKING)]


def with_pruned_attention(model: nn.Module) -> nn.Module:
    """`model` itself, or for an unpruned WavLMSegmentation built of stock transformers
    modules, a copy built as its full structure (our attention, same weights and state dict)
    """
    stock = _stock_attention(model)
    if not stock:
        return model
    if not isinstance(model, WavLMSegmentation) or model.hparams.get("gates"):
        raise TypeError(
            f"{stock[0]} is a stock transformers {type(model.get_submodule(stock[0])).__name__}, "
            "which breaks under dynamic "
            "quantisation (it reads q_proj.bias directly): expected an ungated "
            "WavLMSegmentation, which is then rebuilt with its full structure (our attention)."
        )
    options = {**model.hparams, "structure": Structure.full(model.frontend.config)}
    rebuilt = type(model)(**options)
    rebuilt.specifications = model.specifications
    rebuilt.build()
    rebuilt.load_state_dict(model.state_dict())
    return rebuilt.to(next(model.parameters()).device).train(model.training)


def quantize_model_int8(model: nn.Module) -> nn.Module:
    """An int8 copy of `model` for CPU inference (Linear layers, dynamic quantisation)

    Parameters
    ----------
    model : nn.Module
        A WavLMSegmentation, pruned or not (not gated), left untouched.

    Returns
    -------
    quantized : nn.Module
        A copy, in eval mode on CPU, weight norm folded, whose `nn.Linear` layers are
        `torch.ao.nn.quantized.dynamic.Linear` (int8 weights, per-tensor). It stays on CPU
        (see the module docstring), an instance of a subclass of `type(model)`.
    """
    rebuilt = with_pruned_attention(model)
    if rebuilt is model:
        rebuilt = copy.deepcopy(model)
    reference = optimize_for_inference(rebuilt.to("cpu", torch.float32))
    quantized = torch.ao.quantization.quantize_dynamic(
        reference, {nn.Linear}, dtype=torch.qint8, inplace=True
    )
    # A subclass made now, not a wrapper: what changes is the model's own `_apply` (every
    # .to(), .cuda(), .half() goes through it; torch has no hook for moves), and the copy
    # must stay the pyannote Model it was (pyannote's Inference reads its specifications,
    # receptive field, example output...), which a wrapper would have to forward one by one.
    # The copy is never saved (not a checkpoint) and deep-copies as is.
    cls = type(quantized)
    quantized.__class__ = type(cls.__name__, (_StaysOnCPU, cls), {"__module__": cls.__module__})
    return quantized


# its former name (deploy.onnx gave it to a function of graphs too): kept for code using it
quantize_int8 = quantize_model_int8
