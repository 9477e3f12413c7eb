"""Attention heads: H gates per transformer layer, each scaling one head's context vector.

The gate of head h multiplies its context vector, that is the input columns of `out_proj`
that read it: a parametrization of the stock `out_proj.weight` (WavLM's stock attention
reads the weight directly, so a hook could not reach the context). Pruning keeps the rows
of q, k, v and the columns of out_proj of the kept heads (real indices), folds each kept
soft gate value into its out_proj columns, and leaves the architecture's own per-head
tensors to it (`Architecture.fold_heads`: WavLM's relative-position gate and constants;
its position table, in layer 0, is kept whole whatever heads remain).

On an already pruned network, the gates act on its pruned attention modules (one gate per
kept head, the same parametrization of out_proj.weight); pruning maps the heads they keep
back to their original indices, so a structure always names real heads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn.utils import parametrize
from transformers import PretrainedConfig, PreTrainedModel

from ..architectures import architecture_of
from ..masks import GateMasks, GateParametrization
from .base import (
    Fields,
    Masks,
    Number,
    Panel,
    Sizes,
    State,
    UnitKind,
    check_list,
    is_int,
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


def _head_dim(config: PretrainedConfig) -> int:
    return config.hidden_size // config.num_attention_heads


class AttentionHeads(UnitKind):
    """The heads of each transformer layer's self-attention."""

    name = "head"
    init_drop_rate = 0.01
    block = "attention_layer"
    fields = ("kept_heads",)

    def full(self, config: PretrainedConfig) -> Fields:
        heads = tuple(range(config.num_attention_heads))
        return {"kept_heads": (heads,) * config.num_hidden_layers}

    def validate(self, data: Mapping, config: PretrainedConfig) -> Fields:
        num_heads = config.num_attention_heads
        kept_heads = check_list(data, "kept_heads", config.num_hidden_layers,
                                "lists of head indices")
        for layer, heads in enumerate(kept_heads):
            if not isinstance(heads, (list, tuple)):
                raise ValueError(
                    f"structure['kept_heads'][{layer}] = {heads!r}: expected a list of head "
                    "indices."
                )
            for head in heads:
                if not is_int(head) or not 0 <= head < num_heads:
                    raise ValueError(
                        f"structure['kept_heads'][{layer}] holds {head!r}: expected head "
                        f"indices in [0, {num_heads - 1}]."
                    )
            if len(set(heads)) != len(heads):
                raise ValueError(f"structure['kept_heads'][{layer}] = {list(heads)} repeats a head.")
            if list(heads) != sorted(heads):
                raise ValueError(
                    f"structure['kept_heads'][{layer}] = {list(heads)}: expected increasing "
                    "indices."
                )
        return {"kept_heads": tuple(tuple(int(h) for h in heads) for heads in kept_heads)}

    def summary(self, structure: Structure) -> list[str]:
        return [f"heads per layer: {' '.join(str(len(h)) for h in structure.kept_heads)} "
                f"(of {structure.config.num_attention_heads})"]

    def panel(self, structure: Structure) -> Panel:
        config = structure.config
        return ("attention heads", [len(h) for h in structure.kept_heads],
                [config.num_attention_heads] * config.num_hidden_layers)

    def layer_counts(self, fields: Fields) -> list[int]:
        return [len(heads) for heads in fields["kept_heads"]]

    def describe_layer(self, fields: Fields, layer: int) -> str:
        return f"heads {list(fields['kept_heads'][layer])}"

    def group_sizes(self, structure: Structure) -> list[int]:
        return [len(heads) for heads in structure.kept_heads]

    def attach(self, model: PreTrainedModel, masks: GateMasks, structure: Structure,
               **options) -> None:
        head_dim = _head_dim(structure.config)
        for index, layer in enumerate(model.encoder.layers):
            if structure.kept_heads[index]:  # else no head, no gate
                parametrize.register_parametrization(
                    layer.attention.out_proj, "weight", HeadMask(masks, index, head_dim))

    def exact_sizes(self, structure: Structure) -> Sizes:
        return {"heads": [len(heads) for heads in structure.kept_heads],
                "any_head": [int(len(heads) > 0) for heads in structure.kept_heads]}

    def expected_sizes(self, gates: Sequence[HardConcreteGate], structure: Structure) -> Sizes:
        probabilities = open_probabilities(gates)
        # per-layer parts shared by the heads (WavLM's gate projection) exist iff one of the
        # layer's heads is open
        return {"heads": [p.sum() for p in probabilities],
                "any_head": [1.0 - torch.prod(1.0 - p) for p in probabilities]}

    def params(self, config: PretrainedConfig, sizes: Sizes) -> list[Number]:
        E, d = config.hidden_size, _head_dim(config)
        architecture = architecture_of(config)
        # q, k, v (weights and biases) and out_proj columns, and the architecture's own
        return [(4 * E + 3) * d * heads + architecture.head_params(config, heads, any_head)
                for heads, any_head in zip(sizes["heads"], sizes["any_head"], strict=True)]

    def macs(self, config: PretrainedConfig, sizes: Sizes, frames: list[int]) -> list[Number]:
        E, d, T = config.hidden_size, _head_dim(config), frames[-1]
        architecture = architecture_of(config)
        # q, k, v, out projections; scores and weighted values; the architecture's own
        return [4 * T * d * E * heads + 2 * T * T * d * heads
                + architecture.head_macs(config, heads, T) for heads in sizes["heads"]]

    def kept(self, masks: Masks, structure: Structure) -> dict[str, list]:
        # mask position p is the p-th head `structure` keeps
        return {"kept_heads": [
            [heads[position] for position in nonzero(mask)]
            for mask, heads in zip(masks["head"], structure.kept_heads, strict=True)
        ]}

    def build(self, model: PreTrainedModel, structure: Structure, **options) -> list[nn.Module]:
        config = structure.config
        architecture = architecture_of(config)
        new_modules = []
        for index, layer in enumerate(model.encoder.layers):
            layer.attention = architecture.pruned_attention(config, index,
                                                            structure.kept_heads[index])
            new_modules.append(layer.attention)
        return new_modules

    def fold(self, state: State, masks: Masks, structure: Structure, **options) -> None:
        head_dim = _head_dim(structure.config)
        architecture = architecture_of(structure.config)
        for index, heads in enumerate(structure.kept_heads):
            prefix = layer_key(index, "attention")
            if not heads:
                # (a layer the network had already emptied has nothing left to pop)
                for name in ("q_proj", "k_proj", "v_proj"):
                    pop_prefix(state, f"{prefix}.{name}.")
                state.pop(f"{prefix}.out_proj.weight", None)
                architecture.fold_heads(state, prefix, None)
                continue
            mask = masks["head"][index]  # the block's gate multiplied in (`within_blocks`)
            # positions among the heads the state has (original indices when unpruned)
            kept = torch.nonzero(mask, as_tuple=True)[0]
            rows = (kept[:, None] * head_dim + torch.arange(head_dim, device=mask.device)).flatten()
            for name in ("q_proj", "k_proj", "v_proj"):
                for tensor in ("weight", "bias"):
                    key = f"{prefix}.{name}.{tensor}"
                    state[key] = state[key][rows]
            # the head gates multiply the context vectors, i.e. out_proj's input columns
            weight = state[f"{prefix}.out_proj.weight"]
            column_scale = mask[kept].to(weight.dtype).repeat_interleave(head_dim)
            state[f"{prefix}.out_proj.weight"] = weight[:, rows] * column_scale
            architecture.fold_heads(state, prefix, kept)
