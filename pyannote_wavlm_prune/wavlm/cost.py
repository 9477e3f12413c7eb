"""Cost model of a WavLM front end: parameters and multiply-accumulates (MACs).

One set of formulas serves three cases:

- a gated front end: sizes are expectations under the hard-concrete gates (float64 tensors,
  differentiable in every gate's log_alpha), the quantities the pruning objective targets;
- a pruned (structured) front end or a structure dict: exact integers;
- an unpruned, ungated front end: exact integers.

What is counted
---------------
Parameters: every `nn.Parameter` of the front end (that is of `frontend.wavlm`), gates
excluded. A pruned front end's count equals `sum(p.numel() for p in frontend.parameters())`.

MACs (for one waveform of `num_samples` samples): the multiply-accumulates of matrix
products and convolutions, the operations `torch.utils.flop_counter.FlopCounterMode` counts
(its flops / 2): CNN convolutions, feature projection, positional convolution, q/k/v/out
projections, attention scores and weighted values, the relative-position gate projection
(gru_rel_pos_linear) and the FFN. Not counted, by either: normalisations, activations,
softmax, bias additions, elementwise products (gates, position-bias gating) and embedding
look-ups (a few per mille of the total).

Expectations
------------
With P(unit open) = p_i per gate, expected sizes are sums of p_i (C^, H^, F^) and products
of independent gates' expectations (C^_{l-1} C^_l, A^_j H^_j). Parts that exist only while
something is kept or removed use the exact probability of that event: the gate projection
of a layer exists iff one of its heads is open (1 - prod(1 - p_i)); the feature projection
carries one extra vector of E parameters iff a channel of the last CNN layer is closed
(1 - prod(p_i)), see `pruning.PrunedFeatureProjection`. All gates open: exact counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from transformers import WavLMConfig

from .structure import full_structure, validate_structure

Number = float | int | torch.Tensor


class _Sizes:
    """Per-layer sizes, plain numbers (a structure) or expectations (tensors, gates)."""

    def __init__(self, conv_channels, last_conv_reduced, heads, any_head, ffn_widths,
                 attention_blocks, ffn_blocks):
        self.conv_channels = conv_channels  # C_1 .. C_7
        self.last_conv_reduced = last_conv_reduced  # 1 if C_7 < original C_7
        self.heads = heads  # H_j, number of kept heads
        self.any_head = any_head  # 1 if H_j > 0
        self.ffn_widths = ffn_widths  # F_j
        self.attention_blocks = attention_blocks  # A_j, 1 if the attention block is present
        self.ffn_blocks = ffn_blocks  # G_j


def _structure_sizes(config: WavLMConfig, structure: Mapping[str, Any]) -> _Sizes:
    structure = validate_structure(structure, config)
    channels = structure["conv_channels"]
    return _Sizes(
        conv_channels=channels,
        last_conv_reduced=int(channels[-1] < config.conv_dim[-1]),
        heads=[len(heads) for heads in structure["kept_heads"]],
        any_head=[int(len(heads) > 0) for heads in structure["kept_heads"]],
        ffn_widths=structure["ffn_widths"],
        attention_blocks=[int(flag) for flag in structure["attention_layers"]],
        ffn_blocks=[int(flag) for flag in structure["ffn_layers"]],
    )


def _gate_sizes(frontend: nn.Module) -> _Sizes:
    config = frontend.config
    gates = frontend.gates
    num_layers = config.num_hidden_layers
    full = full_structure(config)

    def probabilities(unit: str, index: int) -> torch.Tensor | None:
        if unit not in gates:
            return None
        return gates[unit][index].open_probability().double()

    conv_channels: list[Number] = list(full["conv_channels"])
    last_conv_reduced: Number = 0
    if "conv" in gates:
        conv_channels = [probabilities("conv", layer).sum() for layer in range(len(conv_channels))]
        last_conv_reduced = 1.0 - torch.prod(probabilities("conv", len(conv_channels) - 1))

    heads: list[Number] = [config.num_attention_heads] * num_layers
    any_head: list[Number] = [1] * num_layers
    ffn_widths: list[Number] = list(full["ffn_widths"])
    attention_blocks: list[Number] = [1] * num_layers
    ffn_blocks: list[Number] = [1] * num_layers
    for layer in range(num_layers):
        if "head" in gates:
            p = probabilities("head", layer)
            heads[layer] = p.sum()
            any_head[layer] = 1.0 - torch.prod(1.0 - p)
        if "ffn" in gates:
            ffn_widths[layer] = probabilities("ffn", layer).sum()
        if "attention_layer" in gates:
            attention_blocks[layer] = probabilities("attention_layer", layer)[0]
        if "ffn_layer" in gates:
            ffn_blocks[layer] = probabilities("ffn_layer", layer)[0]
    return _Sizes(conv_channels, last_conv_reduced, heads, any_head, ffn_widths,
                  attention_blocks, ffn_blocks)


def _frontend_sizes(frontend: nn.Module) -> _Sizes:
    if isinstance(getattr(frontend, "gates", None), nn.ModuleDict):
        return _gate_sizes(frontend)
    structure = getattr(frontend, "structure", None)
    sizes = _structure_sizes(frontend.config, structure or full_structure(frontend.config))
    if getattr(frontend, "pruned_norms", "original") == "kept":
        # Option pruned_norms="kept" (DiariZen import): a plain feature projection, without
        # the pruned channels' vector (structure_params, which sees no front end, counts it)
        sizes.last_conv_reduced = 0
    return sizes


def _params(config: WavLMConfig, sizes: _Sizes) -> Number:
    E = config.hidden_size
    H = config.num_attention_heads
    d = E // H
    pre_ln = config.do_stable_layer_norm

    total: Number = 0
    previous: Number = 1
    for layer, (channels, kernel) in enumerate(zip(sizes.conv_channels, config.conv_kernel, strict=True)):
        total = total + previous * channels * kernel
        if config.conv_bias:
            total = total + channels
        if config.feat_extract_norm == "layer" or layer == 0:
            # LayerNorm (Large) or GroupNorm with one group per channel (Base, layer 0)
            total = total + 2 * channels
        previous = channels

    # feature projection: LayerNorm, Linear, and the pruned channels' contribution vector
    total = total + 2 * previous + previous * E + E + E * sizes.last_conv_reduced

    # positional convolution: weight-norm magnitude (1, 1, k), direction, bias
    kernel, groups = config.num_conv_pos_embeddings, config.num_conv_pos_embedding_groups
    total = total + kernel + E * (E // groups) * kernel + E
    if not pre_ln:
        total = total + 2 * E  # encoder layer norm (pre-LN configs drop it, see WavLMFrontEnd)
    total = total + config.num_buckets * H  # relative position table, layer 0, kept whole

    for layer in range(config.num_hidden_layers):
        heads, ffn = sizes.heads[layer], sizes.ffn_widths[layer]
        attention = (4 * E + 3) * d * heads + E + heads + (8 * d + 8) * sizes.any_head[layer]
        feed_forward = (2 * E + 1) * ffn + E
        attention_block, ffn_block = sizes.attention_blocks[layer], sizes.ffn_blocks[layer]
        total = total + attention_block * attention + ffn_block * feed_forward
        if pre_ln:
            # a pre-LN layer norm is part of its block and goes with it
            total = total + 2 * E * (attention_block + ffn_block)
        else:
            total = total + 4 * E
    return total


def _frames(config: WavLMConfig, num_samples: int) -> list[int]:
    frames, length = [], num_samples
    for kernel, stride in zip(config.conv_kernel, config.conv_stride, strict=True):
        length = (length - kernel) // stride + 1 if length >= kernel else 0
        frames.append(length)
    return frames


def _macs(config: WavLMConfig, sizes: _Sizes, num_samples: int) -> Number:
    E = config.hidden_size
    d = E // config.num_attention_heads
    frames = _frames(config, num_samples)
    T = frames[-1]

    total: Number = 0
    previous: Number = 1
    for channels, kernel, length in zip(sizes.conv_channels, config.conv_kernel, frames, strict=True):
        total = total + length * kernel * previous * channels
        previous = channels
    total = total + T * previous * E

    kernel, groups = config.num_conv_pos_embeddings, config.num_conv_pos_embedding_groups
    positional_frames = T + 2 * (kernel // 2) - kernel + 1
    total = total + positional_frames * E * (E // groups) * kernel

    for layer in range(config.num_hidden_layers):
        heads, ffn = sizes.heads[layer], sizes.ffn_widths[layer]
        # q, k, v, out projections; scores and weighted values; gate projection (d -> 8)
        attention = 4 * T * d * E * heads + 2 * T * T * d * heads + 8 * T * d * heads
        total = total + sizes.attention_blocks[layer] * attention
        total = total + sizes.ffn_blocks[layer] * 2 * T * E * ffn
    return total


def _as_result(value: Number) -> torch.Tensor | int:
    return value if isinstance(value, torch.Tensor) else int(round(value))


def expected_params(frontend: nn.Module) -> torch.Tensor | int:
    """Number of parameters of a front end (gates excluded)

    Gated front end: the expectation under its gates, a float64 scalar tensor differentiable
    in the gates' log_alpha. Otherwise (unpruned or pruned): the exact count, an int.
    """
    return _as_result(_params(frontend.config, _frontend_sizes(frontend)))


def expected_macs(frontend: nn.Module, num_samples: int) -> torch.Tensor | int:
    """Multiply-accumulates for one waveform of `num_samples` samples (see module docstring)

    Gated front end: the expectation under its gates, a float64 scalar tensor differentiable
    in the gates' log_alpha. Otherwise (unpruned or pruned): the exact count, an int.
    """
    return _as_result(_macs(frontend.config, _frontend_sizes(frontend), num_samples))


def structure_params(config: WavLMConfig, structure: Mapping[str, Any] | None = None) -> int:
    """Exact number of parameters of the front end of `structure` (None: unpruned)."""
    sizes = _structure_sizes(config, structure or full_structure(config))
    return _as_result(_params(config, sizes))


def structure_macs(
    config: WavLMConfig, num_samples: int, structure: Mapping[str, Any] | None = None
) -> int:
    """Exact MACs of the front end of `structure` (None: unpruned) for `num_samples` samples."""
    sizes = _structure_sizes(config, structure or full_structure(config))
    return _as_result(_macs(config, sizes, num_samples))


def _check_metric(metric: str, num_samples: int | None) -> None:
    if metric not in ("params", "macs"):
        raise ValueError(f"metric={metric!r}: expected 'params' or 'macs'.")
    if metric == "macs" and (num_samples is None or num_samples < 1):
        raise ValueError(f"num_samples={num_samples!r}: metric='macs' needs a positive length.")


def structure_sparsity(
    config: WavLMConfig,
    structure: Mapping[str, Any],
    metric: str = "params",
    num_samples: int | None = None,
) -> float:
    """Exact 1 - cost(structure) / cost(unpruned), cost being parameters or MACs

    `num_samples`: input length for "macs".
    """
    _check_metric(metric, num_samples)
    if metric == "params":
        return 1.0 - structure_params(config, structure) / structure_params(config)
    return 1.0 - structure_macs(config, num_samples, structure) / structure_macs(config, num_samples)


def expected_sparsity(
    frontend: nn.Module,
    reference: nn.Module | WavLMConfig,
    metric: str = "params",
    num_samples: int | None = None,
) -> torch.Tensor | float:
    """1 - cost(frontend) / cost(reference), cost being parameters or MACs

    Parameters
    ----------
    frontend : WavLMFrontEnd
        Gated (expected, differentiable tensor) or not (exact float).
    reference : WavLMFrontEnd or WavLMConfig
        The teacher. A config stands for its unpruned architecture.
    metric : {"params", "macs"}
        What is counted. Defaults to "params".
    num_samples : int, optional
        Input length for "macs" (the training chunk length, as attention is quadratic in it).
    """
    _check_metric(metric, num_samples)

    if isinstance(reference, WavLMConfig):
        reference_config, reference_sizes = reference, _structure_sizes(
            reference, full_structure(reference))
    else:
        reference_config, reference_sizes = reference.config, _frontend_sizes(reference)
    if metric == "params":
        cost = expected_params(frontend)
        reference_cost = _params(reference_config, reference_sizes)
    else:
        cost = expected_macs(frontend, num_samples)
        reference_cost = _macs(reference_config, reference_sizes, num_samples)
    if isinstance(reference_cost, torch.Tensor):
        # a gated teacher is a constant for the student's objective
        reference_cost = reference_cost.detach()
    sparsity = 1.0 - cost / reference_cost
    return sparsity if isinstance(sparsity, torch.Tensor) else float(sparsity)
