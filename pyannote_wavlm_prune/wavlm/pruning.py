"""Physically smaller WavLMs: the modules of a pruned front end, building one, pruning one.

`build_structured_wavlm(config, structure)` builds a `transformers.WavLMModel` whose modules
have the sizes of `structure` (random weights); `WavLMFrontEnd(config, structure=...)` uses
it. `prune_frontend(gated)` turns a gated front end into a pruned one that computes the
same hidden states as the gated one in eval mode (to float rounding):

- kept units are those with a non-zero eval-mode gate; each kept soft gate value is folded
  into weights (the CNN layer's own rows or norm affine, see `gating.py`; out_proj input
  columns per head; output_dense input columns per FFN unit; a block gate into the block's
  output layer, bias included);
- a layer with no kept head (no FFN unit) keeps its block's output bias, a constant;
  a removed block (closed block gate) keeps nothing, its pre-LN layer norm included;
- the relative position table of layer 0 is kept whole, whatever heads remain;
- LayerNorms over pruned channels (feature projection, Large's CNN layers) are computed over
  the kept channels with the original channel count, the pruned ones being exactly 0; the
  pruned channels' share of the feature projection is folded exactly (see
  `PrunedFeatureProjection`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import WavLMConfig, WavLMModel
from transformers.activations import ACT2FN
from transformers.models.wavlm.modeling_wavlm import WavLMFeatureProjection

from .attention import OutputBias, PrunedWavLMAttention
from .gating import deterministic_masks, is_gated
from .structure import compact_structure, full_structure, validate_structure

if TYPE_CHECKING:
    from .frontend import WavLMFrontEnd


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


class PrunedLayerNormConvLayer(nn.Module):
    """CNN layer of the Large family with pruned output channels: conv > LayerNorm > GELU

    The LayerNorm statistics are those of the original `num_channels` channels, the pruned
    ones being zeros (the gated layer zeroes them before its norm). Parameter names are
    those of transformers' WavLMLayerNormConvLayer.

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
        self.layer_norm = nn.LayerNorm(out_channels, eps=eps)
        self.activation = ACT2FN[activation]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """
        hidden_states (Tensor): shape (batch, in_channels, frames)
        returns (Tensor): shape (batch, out_channels, frames')
        """
        hidden_states = self.conv(hidden_states).transpose(-2, -1)
        norm = self.layer_norm
        hidden_states, _, _ = layer_norm_with_zeros(
            hidden_states, self.num_channels, norm.weight, norm.bias, norm.eps
        )
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


class PrunedWavLMFeedForward(nn.Module):
    """WavLM's FFN with `width` intermediate units (width 0: the constant output bias)

    Parameter names are those of transformers' WavLMFeedForward.
    """

    def __init__(self, hidden_size: int, width: int, activation: str,
                 activation_dropout: float = 0.0, hidden_dropout: float = 0.0):
        super().__init__()
        self.width = width
        self.intermediate_dropout = nn.Dropout(activation_dropout)
        if width > 0:
            self.intermediate_dense = nn.Linear(hidden_size, width)
            self.intermediate_act_fn = ACT2FN[activation]
            self.output_dense = nn.Linear(width, hidden_size)
        else:
            self.output_dense = OutputBias(hidden_size)
        self.output_dropout = nn.Dropout(hidden_dropout)

    def extra_repr(self) -> str:
        return f"width={self.width}"

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """
        hidden_states (Tensor): shape (batch, frames, hidden_size)
        returns (Tensor): shape (batch, frames, hidden_size)
        """
        if self.width == 0:
            return self.output_dropout(self.output_dense.expand(hidden_states))
        hidden_states = self.intermediate_act_fn(self.intermediate_dense(hidden_states))
        hidden_states = self.output_dense(self.intermediate_dropout(hidden_states))
        return self.output_dropout(hidden_states)


class RemovedBlock(nn.Module):
    """A removed FFN block: adds nothing to the residual stream (a 0-d zero)."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states.new_zeros(())


# How LayerNorms over pruned CNN channels normalise (see `build_structured_wavlm`)
PRUNED_NORMS = ("original", "kept")


def check_pruned_norms(pruned_norms: str) -> str:
    """`pruned_norms` itself, or a ValueError naming the accepted values."""
    if pruned_norms not in PRUNED_NORMS:
        raise ValueError(f"pruned_norms={pruned_norms!r}: expected one of {list(PRUNED_NORMS)}.")
    return pruned_norms


def build_structured_wavlm(
    config: WavLMConfig, structure: Mapping[str, Any], pruned_norms: str = "original"
) -> WavLMModel:
    """A `transformers.WavLMModel` with the sizes of `structure` (random weights)

    Stock modules are kept where sizes allow (CNN layers, stock encoder layers, norms,
    positional convolution); attention always runs through `PrunedWavLMAttention` and FFNs
    through `PrunedWavLMFeedForward`, even at full size, so every structure takes the same
    code path. `wavlm.config` is the original (teacher) config: no stock config describes
    a pruned WavLM, the structure does.

    `pruned_norms` says how LayerNorms over pruned CNN channels normalise: "original"
    (default) over the original channel count, the pruned channels counting as zeros
    (`PrunedLayerNormConvLayer`, `PrunedFeatureProjection`: what a gated network computes);
    "kept" over the kept channels alone (stock modules at the kept size: DiariZen's models).
    """
    check_pruned_norms(pruned_norms)
    structure = validate_structure(structure, config)
    channels = structure["conv_channels"]
    # stock CNN layers and feature projection at the kept sizes; a 1-unit FFN placeholder
    # that is replaced below (saves initialising full-size FFNs)
    shape_config = WavLMConfig.from_dict(config.to_dict())
    shape_config.conv_dim = list(channels)
    shape_config.intermediate_size = 1
    wavlm = WavLMModel(shape_config)
    wavlm.config = config
    new_modules: list[nn.Module] = []

    conv_layers = wavlm.feature_extractor.conv_layers
    # Option pruned_norms="kept" (DiariZen import): the stock CNN layers and feature
    # projection built above at the kept sizes already normalise over the kept channels.
    if pruned_norms == "original" and config.feat_extract_norm == "layer":
        previous = 1
        for index, (kept, original) in enumerate(zip(channels, config.conv_dim, strict=True)):
            if kept < original:
                conv_layers[index] = PrunedLayerNormConvLayer(
                    previous, kept, original, config.conv_kernel[index], config.conv_stride[index],
                    bias=config.conv_bias, activation=config.feat_extract_activation,
                )
                new_modules.append(conv_layers[index])
            previous = kept
    if pruned_norms == "original" and channels[-1] < config.conv_dim[-1]:
        wavlm.feature_projection = PrunedFeatureProjection(
            channels[-1], config.conv_dim[-1], config.hidden_size, eps=config.layer_norm_eps,
            dropout=config.feat_proj_dropout,
        )
        new_modules.append(wavlm.feature_projection)

    pre_ln = config.do_stable_layer_norm
    for index, layer in enumerate(wavlm.encoder.layers):
        has_attention = structure["attention_layers"][index]
        layer.attention = PrunedWavLMAttention(
            config.hidden_size,
            config.num_attention_heads,
            structure["kept_heads"][index],
            dropout=config.attention_dropout,
            num_buckets=config.num_buckets,
            max_distance=config.max_bucket_distance,
            has_relative_position_bias=index == 0,
            has_output=has_attention,
        )
        new_modules.append(layer.attention)
        if structure["ffn_layers"][index]:
            layer.feed_forward = PrunedWavLMFeedForward(
                config.hidden_size, structure["ffn_widths"][index], config.hidden_act,
                activation_dropout=config.activation_dropout, hidden_dropout=config.hidden_dropout,
            )
            new_modules.append(layer.feed_forward)
        else:
            layer.feed_forward = RemovedBlock()
        if pre_ln and not has_attention:
            layer.layer_norm = nn.Identity()  # the removed block's input norm
        if pre_ln and not structure["ffn_layers"][index]:
            layer.final_layer_norm = nn.Identity()

    # WavLM's initialisation for the new modules (normal(0, 0.02) linears, ...)
    for module in new_modules:
        module.apply(wavlm._init_weights)
        if isinstance(module, PrunedFeatureProjection):
            bound = module.projection.in_features ** -0.5
            nn.init.uniform_(module.projection.weight, -bound, bound)
            nn.init.uniform_(module.projection.bias, -bound, bound)
            nn.init.zeros_(module.pruned_channels_projection)
    return wavlm


def _nonzero(mask: torch.Tensor) -> list[int]:
    return torch.nonzero(mask, as_tuple=True)[0].tolist()


def _kept_units(frontend: nn.Module) -> tuple[dict[str, list[torch.Tensor]], dict[str, list]]:
    """Eval-mode masks of every unit (ones where ungated) and the structure they keep."""
    if not is_gated(frontend):
        raise ValueError(
            "The front end carries no gates: attach_frontend_gates() it and train the gates "
            "before pruning."
        )
    config = frontend.config
    gate_masks = deterministic_masks(frontend)
    num_layers = config.num_hidden_layers
    full = full_structure(config)
    device = frontend.gates[next(iter(frontend.gates))][0].log_alpha.device

    def masks(unit: str, sizes: list[int]) -> list[torch.Tensor]:
        if unit in gate_masks:
            return gate_masks[unit]
        return [torch.ones(size, device=device) for size in sizes]

    masks_by_unit = {
        "conv": masks("conv", full["conv_channels"]),
        "head": masks("head", [config.num_attention_heads] * num_layers),
        "ffn": masks("ffn", full["ffn_widths"]),
        "attention_layer": masks("attention_layer", [1] * num_layers),
        "ffn_layer": masks("ffn_layer", [1] * num_layers),
    }
    conv_channels = []
    for index, mask in enumerate(masks_by_unit["conv"]):
        kept = _nonzero(mask)
        if not kept:
            raise ValueError(
                f"Every channel of CNN layer {index} is gated off: the pruned network would not "
                "depend on its input. Train with a lower target sparsity."
            )
        conv_channels.append(len(kept))
    attention_layers = [bool(mask[0] > 0) for mask in masks_by_unit["attention_layer"]]
    ffn_layers = [bool(mask[0] > 0) for mask in masks_by_unit["ffn_layer"]]
    structure = {
        "conv_channels": conv_channels,
        "kept_heads": [
            _nonzero(mask) if present else []
            for mask, present in zip(masks_by_unit["head"], attention_layers, strict=True)
        ],
        "ffn_widths": [
            len(_nonzero(mask)) if present else 0
            for mask, present in zip(masks_by_unit["ffn"], ffn_layers, strict=True)
        ],
        "attention_layers": attention_layers,
        "ffn_layers": ffn_layers,
    }
    return masks_by_unit, structure


def structure_from_gates(frontend: nn.Module) -> dict[str, list]:
    """The structure `prune_frontend` would produce from the gates' current eval-mode masks."""
    return compact_structure(_kept_units(frontend)[1])


def pruned_sparsity(frontend: nn.Module, metric: str = "params", num_samples: int | None = None) -> float:
    """Exact sparsity of what `prune_frontend` would make of a gated front end now

    1 - cost(pruned) / cost(unpruned), cost being parameters or MACs for `num_samples`
    samples. Unlike `cost.expected_sparsity`, it counts the structure of the eval-mode
    (deterministic) masks, that is what pruning keeps. NaN when that structure cannot be
    pruned (a CNN layer with no channel left).
    """
    from .cost import _check_metric, structure_sparsity

    _check_metric(metric, num_samples)  # before a NaN could hide a bad argument
    try:
        structure = structure_from_gates(frontend)
    except ValueError:
        return float("nan")
    return structure_sparsity(frontend.config, structure, metric, num_samples)


class _Copier:
    """Copies tensors into a new module's parameters, checking that none is forgotten."""

    def __init__(self, target: nn.Module):
        self.pending = {id(p): name for name, p in target.named_parameters()}

    @torch.no_grad()
    def __call__(self, parameter: torch.Tensor, value: torch.Tensor) -> None:
        if parameter.shape != value.shape:
            raise RuntimeError(f"shape {tuple(value.shape)} for a parameter of shape "
                               f"{tuple(parameter.shape)}")
        parameter.copy_(value)
        self.pending.pop(id(parameter), None)

    def module(self, target: nn.Module, source: nn.Module) -> None:
        """Copy a module that pruning leaves whole (same parameter names and shapes)."""
        sources = dict(source.named_parameters())
        for name, parameter in target.named_parameters():
            self(parameter, sources[name])


def _weight(linear: nn.Module) -> torch.Tensor:
    """The unmasked weight of a (possibly parametrized) Linear layer."""
    if hasattr(linear, "parametrizations") and "weight" in linear.parametrizations:
        return linear.parametrizations.weight.original
    return linear.weight


@torch.no_grad()
def prune_frontend(gated: WavLMFrontEnd) -> tuple[WavLMFrontEnd, dict[str, list]]:
    """A physically smaller front end equivalent to `gated` in eval mode, and its structure

    `gated` is left untouched. The new front end (no gates) is on the same device, in the
    same dtype and train/eval mode; its structure is relative to `gated.config`.

    Raises
    ------
    ValueError
        If `gated` carries no gates, or its gates close every channel of a CNN layer.
    """
    from .frontend import WavLMFrontEnd

    masks, structure = _kept_units(gated)
    config = gated.config
    reference = next(p for name, p in gated.named_parameters() if not name.startswith("gates."))
    # the gates act on an unpruned front end: its newly pruned norms count the pruned
    # channels as zeros ("original"), whatever `gated.pruned_norms` says
    pruned = WavLMFrontEnd(config, structure=structure,
                           cnn_gradient_scale=gated.cnn_gradient_scale,
                           conv_output_scale=gated.conv_output_scale is not None,
                           waveform_norm_eps=gated.waveform_norm_eps)
    pruned.to(device=reference.device, dtype=reference.dtype)
    copy = _Copier(pruned)
    source, target = gated.wavlm, pruned.wavlm

    # CNN: each gate value folds into its own layer (see gating.py for the placement)
    previous = None
    pairs = zip(source.feature_extractor.conv_layers, target.feature_extractor.conv_layers,
                strict=True)
    for index, (old, new) in enumerate(pairs):
        kept = torch.tensor(_nonzero(masks["conv"][index]), device=reference.device)
        z = masks["conv"][index][kept].to(reference.dtype)
        weight = old.conv.weight[kept]
        if previous is not None:
            weight = weight[:, previous]
        bias = None if old.conv.bias is None else old.conv.bias[kept]
        norm = getattr(old, "layer_norm", None)
        if isinstance(norm, nn.GroupNorm):
            # conv > GN > z: z scales the per-channel affine
            copy(new.layer_norm.weight, norm.weight[kept] * z)
            copy(new.layer_norm.bias, norm.bias[kept] * z)
        else:
            # conv > z (> LayerNorm): z scales the conv's output rows
            weight = weight * z[:, None, None]
            bias = None if bias is None else bias * z
            if norm is not None:
                copy(new.layer_norm.weight, norm.weight[kept])
                copy(new.layer_norm.bias, norm.bias[kept])
        copy(new.conv.weight, weight)
        if bias is not None:
            copy(new.conv.bias, bias)
        previous = kept

    kept = previous
    if gated.conv_output_scale is not None:
        # Option conv_output_scale: the fixed scale of the kept last-layer channels
        pruned.conv_output_scale.copy_(gated.conv_output_scale[kept])

    # feature projection: the pruned channels' (exactly zero) share, folded
    old, new = source.feature_projection, target.feature_projection
    copy(new.layer_norm.weight, old.layer_norm.weight[kept])
    copy(new.layer_norm.bias, old.layer_norm.bias[kept])
    copy(new.projection.weight, old.projection.weight[:, kept])
    if isinstance(new, WavLMFeatureProjection):
        copy(new.projection.bias, old.projection.bias)
    else:
        closed = masks["conv"][-1] == 0
        closed_columns = old.projection.weight[:, closed]
        copy(new.projection.bias,
             old.projection.bias + closed_columns @ old.layer_norm.bias[closed])
        copy(new.pruned_channels_projection, closed_columns @ old.layer_norm.weight[closed])

    copy.module(target.encoder.pos_conv_embed, source.encoder.pos_conv_embed)
    if hasattr(target.encoder, "layer_norm"):
        copy.module(target.encoder.layer_norm, source.encoder.layer_norm)

    head_dim = config.hidden_size // config.num_attention_heads
    for index, (old, new) in enumerate(zip(source.encoder.layers, target.encoder.layers,
                                           strict=True)):
        for name in ("layer_norm", "final_layer_norm"):
            if not isinstance(getattr(new, name), nn.Identity):
                copy.module(getattr(new, name), getattr(old, name))
        _copy_attention(copy, old.attention, new.attention, masks["head"][index],
                        masks["attention_layer"][index][0], head_dim)
        _copy_feed_forward(copy, old.feed_forward, new.feed_forward, masks["ffn"][index],
                           masks["ffn_layer"][index][0])

    if copy.pending:
        raise RuntimeError(f"prune_frontend left parameters unset: {sorted(copy.pending.values())}")
    pruned.train(gated.training)
    return pruned, compact_structure(structure)


def _copy_attention(copy: _Copier, old: nn.Module, new: PrunedWavLMAttention,
                    head_mask: torch.Tensor, block_gate: torch.Tensor, head_dim: int) -> None:
    if new.rel_attn_embed is not None:
        copy(new.rel_attn_embed.weight, old.rel_attn_embed.weight)
    if not new.has_output:
        return
    block_gate = block_gate.to(old.out_proj.bias.dtype)
    copy(new.out_proj.bias, old.out_proj.bias * block_gate)
    if not new.kept_heads:
        return
    heads = new.kept_index
    rows = (heads[:, None] * head_dim + torch.arange(head_dim, device=heads.device)).flatten()
    for name in ("q_proj", "k_proj", "v_proj"):
        copy(getattr(new, name).weight, getattr(old, name).weight[rows])
        copy(getattr(new, name).bias, getattr(old, name).bias[rows])
    # the head gates multiply the context vectors, i.e. out_proj's input columns
    column_scale = head_mask[heads].to(block_gate.dtype).repeat_interleave(head_dim) * block_gate
    copy(new.out_proj.weight, _weight(old.out_proj)[:, rows] * column_scale)
    copy(new.gru_rel_pos_const, old.gru_rel_pos_const[:, heads])
    copy.module(new.gru_rel_pos_linear, old.gru_rel_pos_linear)


def _copy_feed_forward(copy: _Copier, old: nn.Module, new: nn.Module, unit_mask: torch.Tensor,
                       block_gate: torch.Tensor) -> None:
    if isinstance(new, RemovedBlock):
        return
    block_gate = block_gate.to(old.output_dense.bias.dtype)
    copy(new.output_dense.bias, old.output_dense.bias * block_gate)
    if new.width == 0:
        return
    kept = torch.nonzero(unit_mask, as_tuple=True)[0]
    copy(new.intermediate_dense.weight, old.intermediate_dense.weight[kept])
    copy(new.intermediate_dense.bias, old.intermediate_dense.bias[kept])
    scale = unit_mask[kept].to(block_gate.dtype) * block_gate
    copy(new.output_dense.weight, old.output_dense.weight[:, kept] * scale)
