"""What every prunable unit kind defines, and the helpers they share.

A unit kind (CNN channels, attention heads, FFN units, whole blocks) holds everything that
unit means, in one module of this package:

its part of `Structure`
- `fields`: the `Structure` fields it owns; `full(config)`: their unpruned values;
  `validate(data, config)`: their values from a structure's dict form, checked (a ValueError
  naming the bad value and what was expected); `as_dict(structure)`: their dict form (plain
  lists; `optional` kinds write theirs only when something is removed); `summary(structure)`:
  lines for a person; `panel(structure)`: a bar chart's (title, kept, of) per layer, or None;
gates and pruning
- `group_sizes(structure)`: how many units each gate group has (one group per layer), those
  the front end's modules have: the structure's kept units (an already pruned network gates
  what it kept; a group may be empty);
- `attach(model, masks, structure)`: how its gates act on the modules (stock transformers
  modules or our pruned ones; hooks or parametrizations, never a fork);
- `kept(masks, structure)`: its `Structure` fields that eval-mode masks keep of `structure`,
  in original indices (kept heads of kept heads are real head indices);
- `build(model, structure)`: the modules of the smaller network, at the kept sizes;
- `fold(state, masks, structure)`: the state dict of the smaller network, each kept gate
  value folded into the weights that follow it (masks index the units the state has);
cost
- `exact_sizes(structure)` / `expected_sizes(gates, structure)`: the per-layer sizes its
  cost terms read, exact for a structure, expectations (differentiable) under the gates;
- `params(config, sizes)` / `macs(config, sizes, frames)`: its terms of the cost model.

Units inside a block (heads in an attention block, FFN units in an FFN block) name it in
`block`; what they share with it is handled once, in `units/__init__.py`, not by reading each
other's entries: their masks come with the block's gate multiplied in (`within_blocks`),
their per-layer cost terms (`params`/`macs` return one term per layer) are weighted by the
block's presence, and a removed block must keep none of them (`layer_counts`).

`attach`, `build` and `fold` take the front end's options as keywords (`pruned_norms`: how
LayerNorms over pruned CNN channels normalise, see `folding.build_structured_wavlm`). What
differs between architecture families (WavLM, HuBERT, wav2vec 2.0) they ask the config's
`Architecture` (`architectures.py`); they name no family.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Integral
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from ..masks import GateMasks

if TYPE_CHECKING:
    from ..gates import HardConcreteGate
    from ..structure import Structure

Number = float | int | torch.Tensor
# per-layer sizes the cost model reads, e.g. {"heads": [H_1, ..., H_L]}: numbers for a
# structure, float64 tensors (expectations under the gates) for a gated front end
Sizes = dict[str, list[Number]]
# eval-mode masks of every unit kind, one (num_units,) tensor per gate group
Masks = Mapping[str, Sequence[torch.Tensor]]
# a front end's state dict: "wavlm.<module path>.<parameter>" -> tensor
State = dict[str, torch.Tensor]


class EmptyLayerError(ValueError):
    """The gates close every unit a layer cannot lose (every channel of a CNN layer)."""


# the values of a unit kind's Structure fields, e.g. {"ffn_widths": (F_1, ..., F_L)}
Fields = dict[str, tuple]
# a bar chart of a structure: (title, kept per layer, original per layer)
Panel = tuple[str, list[int], list[int]]


class UnitKind:
    """One kind of prunable unit (see the module docstring for what each method means)."""

    name: str = ""
    # p of the gates' initialisation, log_alpha ~ N(log((1 - p) / p), 0.01^2)
    # (docs/method.md#hard-concrete-gates)
    init_drop_rate: float = 0.01
    # units of a layer that pruning always keeps (gates' `min_units`): 1 for a CNN layer
    min_kept: int = 0
    # the block kind whose gate scales this kind's units of a layer ("" if none)
    block: str = ""
    fields: tuple[str, ...] = ()
    # whether a structure's dict form may omit the fields (then: nothing removed)
    optional: bool = False

    # its part of Structure
    def full(self, config: PretrainedConfig) -> Fields:
        raise NotImplementedError

    def validate(self, data: Mapping, config: PretrainedConfig) -> Fields:
        raise NotImplementedError

    def as_dict(self, structure: Structure) -> dict[str, list]:
        return {name: _plain(getattr(structure, name)) for name in self.fields}

    def summary(self, structure: Structure) -> list[str]:
        return []

    def panel(self, structure: Structure) -> Panel | None:
        return None

    def layer_counts(self, fields: Fields) -> list[int]:
        """Units kept per transformer layer (kinds inside a block)."""
        raise NotImplementedError

    def describe_layer(self, fields: Fields, layer: int) -> str:
        """What a layer keeps, for messages (kinds inside a block), e.g. "heads [0, 2]"."""
        raise NotImplementedError

    def presence(self, sizes: Sizes) -> list[Number]:
        """Per layer, 1 if the block is present (block kinds; expectations under gates)."""
        raise NotImplementedError

    # gates and pruning
    def group_sizes(self, structure: Structure) -> list[int]:
        raise NotImplementedError

    def attach(self, model: PreTrainedModel, masks: GateMasks, structure: Structure,
               **options) -> None:
        raise NotImplementedError

    def kept(self, masks: Masks, structure: Structure) -> dict[str, list]:
        raise NotImplementedError

    def build(self, model: PreTrainedModel, structure: Structure, **options) -> list[nn.Module]:
        """Swap the modules of this unit in `model` for their kept sizes; return the new ones

        `options`: those of `folding.build_structured_wavlm` (e.g. `pruned_norms`).
        """
        return []

    def fold(self, state: State, masks: Masks, structure: Structure, **options) -> None:
        raise NotImplementedError

    # cost
    def exact_sizes(self, structure: Structure) -> Sizes:
        raise NotImplementedError

    def expected_sizes(self, gates: Sequence[HardConcreteGate], structure: Structure) -> Sizes:
        raise NotImplementedError

    def params(self, config: PretrainedConfig, sizes: Sizes) -> Number | list[Number]:
        return 0

    def macs(self, config: PretrainedConfig, sizes: Sizes,
             frames: list[int]) -> Number | list[Number]:
        return 0


def _plain(value):
    return [_plain(item) for item in value] if isinstance(value, (list, tuple)) else value


def is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def check_list(data: Mapping, key: str, length: int, what: str) -> list:
    """data[key] as a list of `length` items, or a ValueError naming what was expected."""
    value = data[key]
    if not isinstance(value, (list, tuple)) or len(value) != length:
        got = f"length {len(value)}" if isinstance(value, (list, tuple)) else type(value).__name__
        raise ValueError(f"structure[{key!r}] has {got}: expected a list of {length} {what}.")
    return list(value)


def check_counts(data: Mapping, key: str, lowest: int, highest: Sequence[int], what: str,
                 why: str = "") -> tuple[int, ...]:
    """data[key] as one int per layer, each in [lowest, highest[layer]], or a ValueError

    what: the list's items, for the message ("ints (one per layer)"); why: said after the
    range when a value is out of it.
    """
    values = check_list(data, key, len(highest), what)
    for layer, (value, top) in enumerate(zip(values, highest, strict=True)):
        if not is_int(value) or not lowest <= value <= top:
            raise ValueError(f"structure[{key!r}][{layer}] = {value!r}: expected an int in "
                             f"[{lowest}, {top}]{why}.")
    return tuple(int(value) for value in values)


def joined(values) -> str:
    return " ".join(map(str, values))


def open_probabilities(gates: Sequence[HardConcreteGate]) -> list[torch.Tensor]:
    """P(unit open) of every unit of each gate group, float64: shapes (num_units,)"""
    return [gate.open_probability().double() for gate in gates]


def nonzero(mask: torch.Tensor) -> list[int]:
    """Indices of the non-zero entries of a 1-d mask."""
    return torch.nonzero(mask, as_tuple=True)[0].tolist()


def is_open(block_mask: torch.Tensor) -> bool:
    """Whether a block's mask keeps it: (1,) for a present block, (0,) for a removed one."""
    return bool((block_mask > 0).any())


def layer_key(layer: int, path: str) -> str:
    """State-dict key of `path` in transformer layer `layer` of a front end."""
    return f"wavlm.encoder.layers.{layer}.{path}"


def pop_prefix(state: State, prefix: str) -> None:
    """Remove every entry of `state` under `prefix` (a removed module)."""
    for key in [key for key in state if key.startswith(prefix)]:
        del state[key]
