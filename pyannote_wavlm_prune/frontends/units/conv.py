"""CNN output channels: C_l gates per CNN layer l, and the feature projection that reads C_7.

Where the gate z of a channel acts
----------------------------------
The papers place z after conv > norm > GELU (docs/method.md#where-the-gates-act). We place
it so that pruning is exact and each folding stays inside the layer that owns the channel:

- no-norm layer (Base, layers 1-6):  conv > z > GELU. z scales the conv's output rows;
  a closed channel is GELU(0) = 0.
- GroupNorm layer (Base, layer 0):   conv > GN > z > GELU. GN is per channel, so z scales
  its affine parameters.
- LayerNorm layer (Large):           conv > z > LN > (z > 0) > GELU. A closed channel is
  exactly 0 before the norm, so the pruned layer computes the norm over the kept channels
  with the original channel count and matches; the hard mask after the norm makes the
  closed channel's output exactly 0 (its LN output, b - mean / std * w, would not be).

After GELU (the papers' place), a soft z of the last CNN layer could not be folded into the
feature projection's LayerNorm, and pruned channels of a LayerNorm layer would still count
in that layer's statistics.

Pruned modules: LayerNorms over pruned channels (Large's CNN layers, the feature projection)
are computed over the kept channels with the original channel count, the pruned ones being
exactly 0; the pruned channels' share of the feature projection is folded exactly (see
`PrunedFeatureProjection`).

Norm semantics are kept by pruning further
------------------------------------------
The gates of an already pruned network have one unit per kept channel, and act on its
modules as above (`PrunedLayerNormConvLayer`'s norm is a module, for the hard mask).
A network whose norms count the original channels ("original") keeps doing so: a closed
channel is one more zero among them, and its share of the feature projection adds to the
one already folded. A network whose norms are plain LayerNorms over its kept channels
(pruned_norms="kept", DiariZen's models) is gated with those norms taken over the open
channels alone (`NormOverOpenChannels`, closed ones output 0), so that its pruned network
is again plain LayerNorms over the kept channels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.activations import ACT2FN

from ..architectures import architecture_of
from ..masks import GateHook, GateMasks
from .base import (
    EmptyLayerError,
    Fields,
    Masks,
    Number,
    Panel,
    Sizes,
    State,
    UnitKind,
    check_counts,
    joined,
    nonzero,
    open_probabilities,
)

if TYPE_CHECKING:
    from ..gates import HardConcreteGate
    from ..structure import Structure

CONV = "wavlm.feature_extractor.conv_layers"
PROJECTION = "wavlm.feature_projection"


def layer_norm_with_zeros(
    x: torch.Tensor, num_channels: int, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LayerNorm of x's K channels as if (num_channels - K) more channels held exact zeros

    x (Tensor): shape (..., K)
    weight, bias (Tensor): shape (K,), affine parameters of the kept channels
    returns: normalised x (Tensor) of shape (..., K), mean and 1 / std (Tensors) of shape
        (..., 1), the statistics over all num_channels channels
    """
    num_zeros = num_channels - x.shape[-1]
    mean = x.sum(dim=-1, keepdim=True) / num_channels
    centred = x - mean
    # each zero channel adds (0 - mean)^2 to the sum of squared deviations
    variance = (centred.square().sum(dim=-1, keepdim=True) + num_zeros * mean.square())
    inverse_std = torch.rsqrt(variance / num_channels + eps)
    return centred * inverse_std * weight + bias, mean, inverse_std


class LayerNormWithZeros(nn.LayerNorm):
    """LayerNorm of the kept channels with the statistics of `num_channels` channels

    The (num_channels - kept) pruned channels count as exact zeros (`layer_norm_with_zeros`).
    Parameters: those of nn.LayerNorm(kept).
    """

    def __init__(self, kept: int, num_channels: int, eps: float = 1e-5):
        super().__init__(kept, eps=eps)
        self.num_channels = num_channels

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_channels={self.num_channels}"

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """
        hidden_states (Tensor): shape (..., kept)
        returns (Tensor): shape (..., kept)
        """
        normalised, _, _ = layer_norm_with_zeros(hidden_states, self.num_channels, self.weight,
                                                 self.bias, self.eps)
        return normalised


class PrunedLayerNormConvLayer(nn.Module):
    """CNN layer of the Large family with pruned output channels: conv > LayerNorm > GELU

    The LayerNorm statistics are those of the original `num_channels` channels, the pruned
    ones being zeros (the gated layer zeroes them before its norm). Parameter names and
    submodules are those of transformers' WavLMLayerNormConvLayer (so gates attach alike).

    Parameters
    ----------
    in_channels, out_channels : int
        Kept input and output channels.
    num_channels : int
        Original number of output channels (> out_channels).
    kernel_size, stride : int
    bias : bool
    activation : str
        transformers activation name (WavLM: "gelu").
    eps : float, optional
        LayerNorm epsilon. Defaults to 1e-5 (transformers' value for these layers).
    """

    def __init__(self, in_channels: int, out_channels: int, num_channels: int, kernel_size: int,
                 stride: int, bias: bool, activation: str, eps: float = 1e-5):
        super().__init__()
        self.num_channels = num_channels
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, bias=bias)
        self.layer_norm = LayerNormWithZeros(out_channels, num_channels, eps=eps)
        self.activation = ACT2FN[activation]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """
        hidden_states (Tensor): shape (batch, in_channels, frames)
        returns (Tensor): shape (batch, out_channels, frames')
        """
        hidden_states = self.layer_norm(self.conv(hidden_states).transpose(-2, -1))
        return self.activation(hidden_states.transpose(-2, -1))


class PrunedFeatureProjection(nn.Module):
    """WavLM's feature projection (LayerNorm > Linear) after pruning channels of its input

    For a pruned channel p (exactly 0 in the gated network), the LayerNorm outputs
    b_p - (mean / std) w_p, and the projection adds W_p b_p - (mean / std) W_p w_p: the first
    term is folded into `projection.bias`, the second is `pruned_channels_projection` (E
    parameters, = sum_p W_p w_p) scaled by -mean / std of each frame. Exact.

    Parameters
    ----------
    in_channels : int
        Kept channels K of the last CNN layer.
    num_channels : int
        Original number of channels C (> K).
    hidden_size : int
        Transformer width E.
    eps : float
        LayerNorm epsilon.
    dropout : float, optional
        Dropout after the projection (train mode).
    """

    def __init__(self, in_channels: int, num_channels: int, hidden_size: int, eps: float,
                 dropout: float = 0.0):
        super().__init__()
        self.num_channels = num_channels
        self.layer_norm = nn.LayerNorm(in_channels, eps=eps)
        self.projection = nn.Linear(in_channels, hidden_size)
        self.pruned_channels_projection = nn.Parameter(torch.zeros(hidden_size))
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected features and the normalised kept channels (as the stock module returns)

        hidden_states (Tensor): shape (batch, frames, in_channels)
        returns: (Tensor) of shape (batch, frames, hidden_size), (Tensor) of shape
            (batch, frames, in_channels)
        """
        norm = self.layer_norm
        normalised, mean, inverse_std = layer_norm_with_zeros(
            hidden_states, self.num_channels, norm.weight, norm.bias, norm.eps
        )
        projected = self.projection(normalised)
        projected = projected - (mean * inverse_std) * self.pruned_channels_projection
        return self.dropout(projected), normalised


class MaskChannels(GateHook):
    """Forward hook: output * z over the channel dimension (1 or -1); hard: output * (z > 0)."""

    def __init__(self, masks: GateMasks, index: int, dim: int, hard: bool = False):
        super().__init__(masks, "conv", index)
        self.dim = dim
        self.hard = hard

    def __call__(self, module, args, output: torch.Tensor) -> torch.Tensor:
        mask = self.masks.get(self.unit, self.index)
        mask = (mask > 0).to(output.dtype) if self.hard else mask.to(output.dtype)
        if self.dim == 1:
            mask = mask[:, None]  # (batch, channels, frames)
        return output * mask


class NormOverOpenChannels(GateHook):
    """Forward hook of a LayerNorm over CNN channels: the norm of the open channels alone

    For networks whose norms are plain LayerNorms over their channels (pruned_norms="kept"):
    the statistics are those of the channels with z > 0, closed channels output 0, so that
    removing the closed channels leaves a plain LayerNorm over the others.
    input, output (Tensors): shape (..., channels)
    """

    def __call__(self, module: nn.LayerNorm, args, output: torch.Tensor) -> torch.Tensor:
        (hidden_states,) = args
        is_open = (self.masks.get(self.unit, self.index) > 0).to(hidden_states.dtype)
        # a layer whose sampled channels are all closed outputs zeros (as the other norms do)
        count = is_open.sum().clamp(min=1.0)
        mean = (hidden_states * is_open).sum(dim=-1, keepdim=True) / count
        centred = (hidden_states - mean) * is_open
        variance = centred.square().sum(dim=-1, keepdim=True) / count
        normalised = centred * torch.rsqrt(variance + module.eps)
        return (normalised * module.weight + module.bias) * is_open


def _projection_has_norm(config: PretrainedConfig) -> bool:
    return architecture_of(config).projection_has_norm(config)


class ConvChannels(UnitKind):
    """Output channels of each CNN layer (and the feature projection's input)."""

    name = "conv"
    init_drop_rate = 0.01
    # a CNN layer without channel would cut the input off: however high the target, each
    # layer keeps its best channel (the cost model counts it, `expected_sizes`)
    min_kept = 1
    fields = ("conv_channels",)

    def full(self, config: PretrainedConfig) -> Fields:
        return {"conv_channels": tuple(config.conv_dim)}

    def validate(self, data: Mapping, config: PretrainedConfig) -> Fields:
        return {"conv_channels": check_counts(
            data, "conv_channels", 1, config.conv_dim, "ints (one per CNN layer)",
            " (a CNN layer without channel would cut the input off)")}

    def summary(self, structure: Structure) -> list[str]:
        return [f"CNN channels: {joined(structure.conv_channels)} "
                f"(of {joined(structure.config.conv_dim)})"]

    def panel(self, structure: Structure) -> Panel:
        return ("CNN channels", list(structure.conv_channels), list(structure.config.conv_dim))

    def group_sizes(self, structure: Structure) -> list[int]:
        return list(structure.conv_channels)

    def attach(self, model: PreTrainedModel, masks: GateMasks, structure: Structure,
               pruned_norms: str = "original", **options) -> None:
        kept_norms = pruned_norms == "kept"
        architecture = architecture_of(structure.config)
        conv_layers = model.feature_extractor.conv_layers
        for index, layer in enumerate(conv_layers):
            if isinstance(layer, architecture.group_norm_conv):
                layer.layer_norm.register_forward_hook(MaskChannels(masks, index, dim=1))
            elif isinstance(layer, (architecture.layer_norm_conv, PrunedLayerNormConvLayer)):
                layer.conv.register_forward_hook(MaskChannels(masks, index, dim=1))
                # LayerNorm output is (batch, frames, channels)
                layer.layer_norm.register_forward_hook(
                    NormOverOpenChannels(masks, self.name, index) if kept_norms
                    else MaskChannels(masks, index, dim=-1, hard=True))
            elif isinstance(layer, architecture.no_norm_conv):
                layer.conv.register_forward_hook(MaskChannels(masks, index, dim=1))
            else:
                raise ValueError(f"CNN layer {index} is a {type(layer).__name__}: expected one "
                                 f"of transformers' {architecture.name} conv layers or a "
                                 "PrunedLayerNormConvLayer.")
        if kept_norms and architecture.projection_has_norm(structure.config):
            model.feature_projection.layer_norm.register_forward_hook(
                NormOverOpenChannels(masks, self.name, len(conv_layers) - 1))

    def exact_sizes(self, structure: Structure) -> Sizes:
        channels = list(structure.conv_channels)
        # the projection's extra vector (`PrunedFeatureProjection`) exists iff channels of the
        # last layer are pruned and the projection normalises them
        reduced = (channels[-1] < structure.config.conv_dim[-1]
                   and _projection_has_norm(structure.config))
        return {"conv_channels": channels, "last_conv_reduced": [int(reduced)]}

    def expected_sizes(self, gates: Sequence[HardConcreteGate], structure: Structure) -> Sizes:
        probabilities = open_probabilities(gates)
        # the projection's extra vector exists iff a channel of the last layer is closed, or
        # was already pruned
        reduced = structure.conv_channels[-1] < structure.config.conv_dim[-1]
        all_open = torch.prod(probabilities[-1])
        vector = 1.0 - (0.0 if reduced else all_open)
        return {"conv_channels": [gate.expected_kept(p)
                                  for gate, p in zip(gates, probabilities, strict=True)],
                "last_conv_reduced": [vector if _projection_has_norm(structure.config) else 0]}

    def params(self, config: PretrainedConfig, sizes: Sizes) -> Number:
        total: Number = 0
        previous: Number = 1
        for layer, (channels, kernel) in enumerate(zip(sizes["conv_channels"], config.conv_kernel,
                                                       strict=True)):
            total = total + previous * channels * kernel
            if config.conv_bias:
                total = total + channels
            if config.feat_extract_norm == "layer" or layer == 0:
                # LayerNorm (Large) or GroupNorm with one group per channel (Base, layer 0)
                total = total + 2 * channels
            previous = channels
        E = config.hidden_size
        # feature projection: LayerNorm (if any), Linear, the pruned channels' vector
        norm = 2 * previous if _projection_has_norm(config) else 0
        return total + norm + previous * E + E + E * sizes["last_conv_reduced"][0]

    def macs(self, config: PretrainedConfig, sizes: Sizes, frames: list[int]) -> Number:
        total: Number = 0
        previous: Number = 1
        for channels, kernel, length in zip(sizes["conv_channels"], config.conv_kernel, frames,
                                            strict=True):
            total = total + length * kernel * previous * channels
            previous = channels
        return total + frames[-1] * previous * config.hidden_size

    def kept(self, masks: Masks, structure: Structure) -> dict[str, list]:
        channels = []
        for index, mask in enumerate(masks["conv"]):
            kept = nonzero(mask)
            if not kept:
                raise EmptyLayerError(
                    f"Every channel of CNN layer {index} is gated off: the pruned network would "
                    "not depend on its input. Train with a lower target sparsity."
                )
            channels.append(len(kept))
        return {"conv_channels": channels}

    def build(self, model: PreTrainedModel, structure: Structure, pruned_norms: str = "original",
              **options) -> list[nn.Module]:
        new_modules: list[nn.Module] = []
        if pruned_norms == "kept":
            # the stock CNN layers and feature projection at the kept sizes already normalise
            # over the kept channels (DiariZen's models)
            return new_modules
        config = structure.config
        channels = structure.conv_channels
        conv_layers = model.feature_extractor.conv_layers
        if config.feat_extract_norm == "layer":
            previous = 1
            for index, (kept, original) in enumerate(zip(channels, config.conv_dim, strict=True)):
                if kept < original:
                    conv_layers[index] = PrunedLayerNormConvLayer(
                        previous, kept, original, config.conv_kernel[index],
                        config.conv_stride[index], bias=config.conv_bias,
                        activation=config.feat_extract_activation,
                    )
                    new_modules.append(conv_layers[index])
                previous = kept
        if channels[-1] < config.conv_dim[-1] and _projection_has_norm(config):
            model.feature_projection = PrunedFeatureProjection(
                channels[-1], config.conv_dim[-1], config.hidden_size, eps=config.layer_norm_eps,
                dropout=config.feat_proj_dropout,
            )
            new_modules.append(model.feature_projection)
        return new_modules

    def fold(self, state: State, masks: Masks, structure: Structure,
             pruned_norms: str = "original", **options) -> None:
        config = structure.config
        previous = None
        for index, mask in enumerate(masks["conv"]):
            prefix = f"{CONV}.{index}"
            kept = torch.tensor(nonzero(mask), device=mask.device)
            weight = state[f"{prefix}.conv.weight"][kept]
            z = mask[kept].to(weight.dtype)
            if previous is not None:
                weight = weight[:, previous]
            bias = state.get(f"{prefix}.conv.bias")
            bias = None if bias is None else bias[kept]
            if config.feat_extract_norm == "group" and index == 0:
                # conv > GN > z: z scales the per-channel affine
                for name in ("weight", "bias"):
                    key = f"{prefix}.layer_norm.{name}"
                    state[key] = state[key][kept] * z
            else:
                # conv > z (> LayerNorm): z scales the conv's output rows
                weight = weight * z[:, None, None]
                bias = None if bias is None else bias * z
                if config.feat_extract_norm == "layer":
                    for name in ("weight", "bias"):
                        key = f"{prefix}.layer_norm.{name}"
                        state[key] = state[key][kept]
            state[f"{prefix}.conv.weight"] = weight
            if bias is not None:
                state[f"{prefix}.conv.bias"] = bias
            previous = kept

        projection = state[f"{PROJECTION}.projection.weight"]
        state[f"{PROJECTION}.projection.weight"] = projection[:, previous]
        if "conv_output_scale" in state:
            # a fixed per-channel scale of the last CNN output (DiariZen's models)
            state["conv_output_scale"] = state["conv_output_scale"][previous]
        if not _projection_has_norm(config):
            return  # the pruned channels are exact zeros the projection no longer reads
        # the projection's norm: the kept channels'; with norms over the original count, the
        # newly pruned channels' (exactly zero) share folded in addition to that of the
        # channels pruned before
        norm_weight = state[f"{PROJECTION}.layer_norm.weight"]
        norm_bias = state[f"{PROJECTION}.layer_norm.bias"]
        state[f"{PROJECTION}.layer_norm.weight"] = norm_weight[previous]
        state[f"{PROJECTION}.layer_norm.bias"] = norm_bias[previous]
        closed = masks["conv"][-1] == 0
        if closed.any() and pruned_norms == "original":
            closed_columns = projection[:, closed]
            state[f"{PROJECTION}.projection.bias"] = (
                state[f"{PROJECTION}.projection.bias"] + closed_columns @ norm_bias[closed])
            vector = f"{PROJECTION}.pruned_channels_projection"
            state[vector] = closed_columns @ norm_weight[closed] + state.get(vector, 0.0)
