"""int8 dynamic quantisation of a segmentation model for torch inference.

`quantize_int8(model)` returns a copy whose Linear layers hold int8 weights and quantise their
input on the fly (torch.ao.quantization.quantize_dynamic): WavLM's projections and FFNs, the
back end's projection, Conformer FFNs and classifier. Convolutions stay fp32. Our
`PrunedWavLMAttention` reads its projections through their modules, so it keeps working;
stock transformers `WavLMAttention` reads `q_proj.bias` directly and breaks once quantised,
so the unpruned model must be built with the full structure (SDPA attention) to be
quantised. The quantised copy is for inference only: its state dict is not a pyannote
checkpoint, save the fp32 model instead.

For ONNX Runtime's int8 graphs see `onnx.quantize_int8`.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .inference import optimize_for_inference


def _check_attention(model: nn.Module) -> None:
    from transformers.models.wavlm.modeling_wavlm import WavLMAttention

    stock = [name for name, module in model.named_modules() if isinstance(module, WavLMAttention)]
    if stock:
        raise TypeError(
            f"{stock[0]} is a stock transformers WavLMAttention, which breaks under dynamic "
            "quantisation (it reads q_proj.bias directly): expected the pruned attention. Build "
            "the model with structure=full_structure(config) (same weights, state dict "
            "compatible) to quantise an unpruned WavLM."
        )


def quantize_int8(model: nn.Module) -> nn.Module:
    """An int8 copy of `model` for CPU inference (Linear layers, dynamic quantisation)

    Parameters
    ----------
    model : nn.Module
        A WavLMSegmentation (pruned, or unpruned built with the full structure), left
        untouched.

    Returns
    -------
    quantized : nn.Module
        A copy, in eval mode on CPU, weight norm folded, whose `nn.Linear` layers are
        `torch.ao.nn.quantized.dynamic.Linear` (int8 weights, per-tensor).
    """
    _check_attention(model)
    reference = optimize_for_inference(copy.deepcopy(model).to("cpu", torch.float32))
    return torch.ao.quantization.quantize_dynamic(
        reference, {nn.Linear}, dtype=torch.qint8, inplace=True
    )
