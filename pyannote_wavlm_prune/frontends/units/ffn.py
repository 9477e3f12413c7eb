"""FFN intermediate units: F gates per transformer layer, after the activation.

The gate of unit i multiplies its activation before `output_dense` (a forward pre-hook on the
stock module). Pruning keeps the kept units' rows of `intermediate_dense` and columns of
`output_dense`, each kept soft value folded into its column. A layer with no unit left keeps
the block's output bias, a constant (`OutputBias`). The gates of an already pruned network
act on its `PrunedFeedForward`s the same way (one gate per kept unit).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.activations import ACT2FN

from ..attention import OutputBias
from ..masks import GateHook, GateMasks
from .base import (
    Fields,
    Masks,
    Number,
    Panel,
    Sizes,
    State,
    UnitKind,
    check_counts,
    joined,
    layer_key,
    nonzero,
    open_probabilities,
    pop_prefix,
)

if TYPE_CHECKING:
    from ..gates import HardConcreteGate
    from ..structure import Structure


class PrunedFeedForward(nn.Module):
    """The FFN of a transformer layer with `width` intermediate units (0: the output bias)

    Parameter names are those of transformers' WavLMFeedForward (Wav2Vec2FeedForward and
    HubertFeedForward name them alike).
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


class MaskInput(GateHook):
    """Forward pre-hook: input * z over the last dimension (FFN units before output_dense)."""

    def __call__(self, module, args):
        (hidden_states,) = args
        return (hidden_states * self.masks.get(self.unit, self.index).to(hidden_states.dtype),)


# its former name, kept importable
PrunedWavLMFeedForward = PrunedFeedForward


class FeedForwardUnits(UnitKind):
    """The intermediate units of each transformer layer's FFN."""

    name = "ffn"
    init_drop_rate = 0.5
    block = "ffn_layer"
    fields = ("ffn_widths",)

    def full(self, config: PretrainedConfig) -> Fields:
        return {"ffn_widths": (config.intermediate_size,) * config.num_hidden_layers}

    def validate(self, data: Mapping, config: PretrainedConfig) -> Fields:
        widths = [config.intermediate_size] * config.num_hidden_layers
        return {"ffn_widths": check_counts(data, "ffn_widths", 0, widths, "ints (one per layer)")}

    def summary(self, structure: Structure) -> list[str]:
        return [f"FFN widths: {joined(structure.ffn_widths)} "
                f"(of {structure.config.intermediate_size})"]

    def panel(self, structure: Structure) -> Panel:
        config = structure.config
        return ("FFN units", list(structure.ffn_widths),
                [config.intermediate_size] * config.num_hidden_layers)

    def layer_counts(self, fields: Fields) -> list[int]:
        return list(fields["ffn_widths"])

    def describe_layer(self, fields: Fields, layer: int) -> str:
        return f"width {fields['ffn_widths'][layer]}"

    def group_sizes(self, structure: Structure) -> list[int]:
        return list(structure.ffn_widths)

    def attach(self, model: PreTrainedModel, masks: GateMasks, structure: Structure,
               **options) -> None:
        for index, layer in enumerate(model.encoder.layers):
            if structure.ffn_widths[index]:  # else no unit, no gate
                layer.feed_forward.output_dense.register_forward_pre_hook(
                    MaskInput(masks, self.name, index))

    def exact_sizes(self, structure: Structure) -> Sizes:
        return {"ffn_widths": list(structure.ffn_widths)}

    def expected_sizes(self, gates: Sequence[HardConcreteGate], structure: Structure) -> Sizes:
        return {"ffn_widths": [p.sum() for p in open_probabilities(gates)]}

    def params(self, config: PretrainedConfig, sizes: Sizes) -> list[Number]:
        E = config.hidden_size
        return [(2 * E + 1) * width for width in sizes["ffn_widths"]]

    def macs(self, config: PretrainedConfig, sizes: Sizes, frames: list[int]) -> list[Number]:
        E, T = config.hidden_size, frames[-1]
        return [2 * T * E * width for width in sizes["ffn_widths"]]

    def kept(self, masks: Masks, structure: Structure) -> dict[str, list]:
        return {"ffn_widths": [len(nonzero(mask)) for mask in masks["ffn"]]}

    def build(self, model: PreTrainedModel, structure: Structure, **options) -> list[nn.Module]:
        config = structure.config
        new_modules = []
        for index, layer in enumerate(model.encoder.layers):
            layer.feed_forward = PrunedFeedForward(
                config.hidden_size, structure.ffn_widths[index], config.hidden_act,
                activation_dropout=config.activation_dropout, hidden_dropout=config.hidden_dropout,
            )
            new_modules.append(layer.feed_forward)
        return new_modules

    def fold(self, state: State, masks: Masks, structure: Structure, **options) -> None:
        for index, width in enumerate(structure.ffn_widths):
            prefix = layer_key(index, "feed_forward")
            if width == 0:
                pop_prefix(state, f"{prefix}.intermediate_dense.")
                state.pop(f"{prefix}.output_dense.weight", None)
                continue
            mask = masks["ffn"][index]  # the block's gate multiplied in (`within_blocks`)
            kept = torch.nonzero(mask, as_tuple=True)[0]
            for tensor in ("weight", "bias"):
                key = f"{prefix}.intermediate_dense.{tensor}"
                state[key] = state[key][kept]
            weight = state[f"{prefix}.output_dense.weight"]
            state[f"{prefix}.output_dense.weight"] = weight[:, kept] * mask[kept].to(weight.dtype)
