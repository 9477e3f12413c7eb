"""Attention heads: H gates per transformer layer, each scaling one head's context vector.

The gate of head h multiplies its context vector, that is the input columns of `out_proj`
that read it: a parametrization of the stock `out_proj.weight` (stock attention reads the
weight directly, so a hook could not reach the context). Pruning keeps the rows of q, k, v
and the columns of out_proj of the kept heads (real indices), folds each kept soft gate
value into its out_proj columns, and keeps the relative-position gate (`gru_rel_pos_linear`,
shared by the heads of a layer) and the kept heads' `gru_rel_pos_const`. Layer 0's relative
position table is kept whole, whatever heads remain: every layer reads it.

On an already pruned network, the gates act on its `PrunedWavLMAttention`s (one gate per
kept head, the same parametrization of out_proj.weight); pruning maps the heads they keep
back to their original indices, so a structure always names real heads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn.utils import parametrize
from transformers import WavLMConfig, WavLMModel

from ..attention import PrunedWavLMAttention
from ..masks import GateMasks, GateParametrization
from .base import (
    Masks,
    Number,
    Sizes,
    State,
    UnitKind,
    is_open,
    layer_key,
    nonzero,
    open_probabilities,
    pop_prefix,
)

if TYPE_CHECKING:
    from ..gates import HardConcreteGate
    from ..structure import Structure


class HeadMask(GateParametrization):
    """Parametrization of out_proj.weight: input columns of head h multiplied by z_h

    weight (Tensor): shape (embed_dim, num_heads * head_dim)
    """

    def __init__(self, masks: GateMasks, index: int, head_dim: int):
        super().__init__(masks, "head", index)
        self.head_dim = head_dim

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        mask = self.masks.get(self.unit, self.index).to(weight.dtype)
        return weight * mask.repeat_interleave(self.head_dim)[None, :]


def _head_dim(config: WavLMConfig) -> int:
    return config.hidden_size // config.num_attention_heads


class AttentionHeads(UnitKind):
    """The heads of each transformer layer's self-attention."""

    name = "head"
    init_drop_rate = 0.01

    def group_sizes(self, structure: Structure) -> list[int]:
        return [len(heads) for heads in structure.kept_heads]

    def attach(self, wavlm: WavLMModel, masks: GateMasks, structure: Structure,
               **options) -> None:
        head_dim = _head_dim(structure.config)
        for index, layer in enumerate(wavlm.encoder.layers):
            if structure.kept_heads[index]:  # else no head, no gate
                parametrize.register_parametrization(
                    layer.attention.out_proj, "weight", HeadMask(masks, index, head_dim))

    def exact_sizes(self, structure: Structure) -> Sizes:
        return {"heads": [len(heads) for heads in structure.kept_heads],
                "any_head": [int(len(heads) > 0) for heads in structure.kept_heads]}

    def expected_sizes(self, gates: Sequence[HardConcreteGate], structure: Structure) -> Sizes:
        probabilities = open_probabilities(gates)
        # the relative-position gate of a layer exists iff one of its heads is open
        return {"heads": [p.sum() for p in probabilities],
                "any_head": [1.0 - torch.prod(1.0 - p) for p in probabilities]}

    def params(self, config: WavLMConfig, sizes: Sizes) -> Number:
        E, d = config.hidden_size, _head_dim(config)
        total: Number = 0
        for heads, any_head, block in zip(sizes["heads"], sizes["any_head"],
                                          sizes["attention_blocks"], strict=True):
            # q, k, v (weights and biases), out_proj columns, gru_rel_pos_const; the gate
            # projection d -> 8 once per layer
            total = total + block * ((4 * E + 3) * d * heads + heads + (8 * d + 8) * any_head)
        return total

    def macs(self, config: WavLMConfig, sizes: Sizes, frames: list[int]) -> Number:
        E, d, T = config.hidden_size, _head_dim(config), frames[-1]
        total: Number = 0
        for heads, block in zip(sizes["heads"], sizes["attention_blocks"], strict=True):
            # q, k, v, out projections; scores and weighted values; gate projection (d -> 8)
            total = total + block * (4 * T * d * E * heads + 2 * T * T * d * heads + 8 * T * d * heads)
        return total

    def kept(self, masks: Masks, structure: Structure) -> dict[str, list]:
        # mask position p is the p-th head `structure` keeps
        return {"kept_heads": [
            [heads[position] for position in nonzero(mask)] if is_open(block) else []
            for mask, block, heads in zip(masks["head"], masks["attention_layer"],
                                          structure.kept_heads, strict=True)
        ]}

    def build(self, wavlm: WavLMModel, structure: Structure, **options) -> list[nn.Module]:
        config = structure.config
        new_modules = []
        for index, layer in enumerate(wavlm.encoder.layers):
            layer.attention = PrunedWavLMAttention(
                config.hidden_size,
                config.num_attention_heads,
                structure.kept_heads[index],
                dropout=config.attention_dropout,
                num_buckets=config.num_buckets,
                max_distance=config.max_bucket_distance,
                has_relative_position_bias=index == 0,
                has_output=structure.attention_layers[index],
            )
            new_modules.append(layer.attention)
        return new_modules

    def fold(self, state: State, masks: Masks, structure: Structure, **options) -> None:
        head_dim = _head_dim(structure.config)
        for index, heads in enumerate(structure.kept_heads):
            prefix = layer_key(index, "attention")
            if not heads:
                # (a layer the network had already emptied has nothing left to pop)
                for name in ("q_proj", "k_proj", "v_proj", "gru_rel_pos_linear"):
                    pop_prefix(state, f"{prefix}.{name}.")
                state.pop(f"{prefix}.out_proj.weight", None)
                state.pop(f"{prefix}.gru_rel_pos_const", None)
                continue
            mask = masks["head"][index]
            # positions among the heads the state has (original indices when unpruned)
            kept = torch.nonzero(mask, as_tuple=True)[0]
            rows = (kept[:, None] * head_dim + torch.arange(head_dim, device=mask.device)).flatten()
            for name in ("q_proj", "k_proj", "v_proj"):
                for tensor in ("weight", "bias"):
                    key = f"{prefix}.{name}.{tensor}"
                    state[key] = state[key][rows]
            # the head gates multiply the context vectors, i.e. out_proj's input columns
            weight = state[f"{prefix}.out_proj.weight"]
            block = masks["attention_layer"][index][0].to(weight.dtype)
            column_scale = mask[kept].to(weight.dtype).repeat_interleave(head_dim) * block
            state[f"{prefix}.out_proj.weight"] = weight[:, rows] * column_scale
            const = state[f"{prefix}.gru_rel_pos_const"]
            state[f"{prefix}.gru_rel_pos_const"] = const[:, kept]
