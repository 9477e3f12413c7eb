"""Whole blocks: one gate per transformer layer on its attention block, one on its FFN block.

A block gate scales the block's output (a forward hook on the stock module). Pruning folds a
kept block's gate into its output layer: into its weights through the units inside it (their
masks come with the block's gate multiplied in, `units.within_blocks`), into its bias here.
A removed block keeps nothing, its pre-LN layer norm included (Large), and adds nothing to
the residual stream. A block an already pruned network removed has an empty gate group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from ..architectures import architecture_of
from ..masks import GateHook, GateMasks
from .base import (
    Fields,
    Masks,
    Number,
    Sizes,
    State,
    UnitKind,
    check_list,
    is_open,
    joined,
    layer_key,
    open_probabilities,
    pop_prefix,
)

if TYPE_CHECKING:
    from ..gates import HardConcreteGate
    from ..structure import Structure


class RemovedBlock(nn.Module):
    """A removed FFN block: adds nothing to the residual stream (a 0-d zero)."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states.new_zeros(())


class ScaleBlock(GateHook):
    """Forward hook: a whole block's output * z (z has one unit)."""

    def __call__(self, module, args, output):
        scale = self.masks.get(self.unit, self.index)
        if isinstance(output, tuple):
            # WavLMAttention returns (output, weights, position_bias)
            return (output[0] * scale.to(output[0].dtype),) + tuple(output[1:])
        return output * scale.to(output.dtype)


class _Blocks(UnitKind):
    """One gate per layer on a whole block (`module` of each layer)."""

    module = ""  # the block's module in an encoder layer
    norm = ""  # its input norm in pre-LN (Large) layers
    output = ""  # its output layer
    field = ""  # Structure field: one bool per layer
    size = ""  # Sizes field: 1 if the block is present
    title = ""  # its name in messages
    optional = True  # in a structure's dict form only when a block is removed

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.field,)

    def full(self, config: PretrainedConfig) -> Fields:
        return {self.field: (True,) * config.num_hidden_layers}

    def validate(self, data: Mapping, config: PretrainedConfig) -> Fields:
        if self.field not in data:
            return self.full(config)
        flags = check_list(data, self.field, config.num_hidden_layers,
                           "bools (False: block removed)")
        for layer, flag in enumerate(flags):
            if not isinstance(flag, bool):
                raise ValueError(f"structure[{self.field!r}][{layer}] = {flag!r}: expected a bool.")
        return {self.field: tuple(flags)}

    def as_dict(self, structure: Structure) -> dict[str, list]:
        flags = getattr(structure, self.field)
        return {} if all(flags) else {self.field: list(flags)}

    def summary(self, structure: Structure) -> list[str]:
        removed = [index for index, kept in enumerate(getattr(structure, self.field)) if not kept]
        return [f"{self.field.replace('_', ' ')} removed: {joined(removed)}"] if removed else []

    def presence(self, sizes: Sizes) -> list[Number]:
        return sizes[self.size]

    def group_sizes(self, structure: Structure) -> list[int]:
        return [int(present) for present in getattr(structure, self.field)]

    def attach(self, model: PreTrainedModel, masks: GateMasks, structure: Structure,
               **options) -> None:
        for index, layer in enumerate(model.encoder.layers):
            if getattr(structure, self.field)[index]:
                getattr(layer, self.module).register_forward_hook(
                    ScaleBlock(masks, self.name, index))

    def exact_sizes(self, structure: Structure) -> Sizes:
        return {self.size: [int(flag) for flag in getattr(structure, self.field)]}

    def expected_sizes(self, gates: Sequence[HardConcreteGate], structure: Structure) -> Sizes:
        # a removed block's group is empty: sum() is 0
        return {self.size: [p.sum() for p in open_probabilities(gates)]}

    def params(self, config: PretrainedConfig, sizes: Sizes) -> Number:
        E = config.hidden_size
        # the output layer's bias, and a pre-LN layer norm that goes with its block
        per_block = E + (2 * E if config.do_stable_layer_norm else 0)
        return sum(block * per_block for block in sizes[self.size])

    def kept(self, masks: Masks, structure: Structure) -> dict[str, list]:
        return {self.field: [is_open(mask) for mask in masks[self.name]]}

    def build(self, model: PreTrainedModel, structure: Structure, **options) -> list[nn.Module]:
        for index, layer in enumerate(model.encoder.layers):
            if not getattr(structure, self.field)[index]:
                self.remove(layer, structure.config, index)
                if structure.config.do_stable_layer_norm:
                    setattr(layer, self.norm, nn.Identity())
        return []

    def remove(self, layer: nn.Module, config: PretrainedConfig, index: int) -> None:
        """Make the block of `layer` (transformer layer `index`) add nothing."""
        raise NotImplementedError

    def fold(self, state: State, masks: Masks, structure: Structure, **options) -> None:
        for index, present in enumerate(getattr(structure, self.field)):
            prefix = layer_key(index, self.module)
            bias = f"{prefix}.{self.output}.bias"
            if present:
                state[bias] = state[bias] * masks[self.name][index][0].to(state[bias].dtype)
                continue
            # (nothing left to pop of a block the network had already removed)
            state.pop(bias, None)
            if structure.config.do_stable_layer_norm:
                pop_prefix(state, layer_key(index, f"{self.norm}."))


class AttentionBlocks(_Blocks):
    """Whole attention blocks (the pruned attention module outputs nothing when removed)."""

    name = "attention_layer"
    module, norm, output = "attention", "layer_norm", "out_proj"
    field, size, title = "attention_layers", "attention_blocks", "attention"

    def remove(self, layer: nn.Module, config: PretrainedConfig, index: int) -> None:
        # the architecture's removed attention (WavLM's still passes the position bias on)
        layer.attention = architecture_of(config).removed_attention(config, index)


class FeedForwardBlocks(_Blocks):
    """Whole FFN blocks."""

    name = "ffn_layer"
    module, norm, output = "feed_forward", "final_layer_norm", "output_dense"
    field, size, title = "ffn_layers", "ffn_blocks", "FFN"

    def remove(self, layer: nn.Module, config: PretrainedConfig, index: int) -> None:
        layer.feed_forward = RemovedBlock()
