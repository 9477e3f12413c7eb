"""What every prunable unit kind defines, and the parts of WavLM that are never pruned.

A unit kind (CNN channels, attention heads, FFN units, whole blocks) holds everything that
unit means, in one module of this package:

- `group_sizes(structure)`: how many units each gate group has (one group per layer), those
  the front end's modules have: the structure's kept units (an already pruned network gates
  what it kept; a group may be empty);
- `attach(wavlm, masks, structure)`: how its gates act on the modules (stock transformers
  modules or our pruned ones; hooks or parametrizations, never a fork);
- `exact_sizes(structure)` / `expected_sizes(gates, structure)`: the per-layer sizes the cost
  model reads, exact for a structure, expectations (differentiable) under the gates;
- `params(config, sizes)` / `macs(config, sizes, frames)`: its terms of the cost model;
- `kept(masks, structure)`: the `Structure` fields that eval-mode masks keep of `structure`,
  in original indices (kept heads of kept heads are real head indices);
- `build(wavlm, structure)`: the modules of the smaller network, at the kept sizes;
- `fold(state, masks, structure)`: the state dict of the smaller network, each kept gate
  value folded into the weights that follow it (masks index the units the state has).

`attach`, `build` and `fold` take the front end's options as keywords (`pruned_norms`: how
LayerNorms over pruned CNN channels normalise, see `folding.build_structured_wavlm`).

Gating (`gating.py`), the cost model (`cost.py`, `Structure.params`) and pruning
(`folding.py`) iterate over `units.UNIT_KINDS` and know no unit in particular.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import WavLMConfig, WavLMModel

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


class UnitKind:
    """One kind of prunable unit (see the module docstring for what each method means)."""

    name: str = ""
    # p of the gates' initialisation, log_alpha ~ N(log((1 - p) / p), 0.01^2)
    # (docs/method.md#hard-concrete-gates)
    init_drop_rate: float = 0.01

    def group_sizes(self, structure: Structure) -> list[int]:
        raise NotImplementedError

    def attach(self, wavlm: WavLMModel, masks: GateMasks, structure: Structure,
               **options) -> None:
        raise NotImplementedError

    def exact_sizes(self, structure: Structure) -> Sizes:
        raise NotImplementedError

    def expected_sizes(self, gates: Sequence[HardConcreteGate], structure: Structure) -> Sizes:
        raise NotImplementedError

    def params(self, config: WavLMConfig, sizes: Sizes) -> Number:
        return 0

    def macs(self, config: WavLMConfig, sizes: Sizes, frames: list[int]) -> Number:
        return 0

    def kept(self, masks: Masks, structure: Structure) -> dict[str, list]:
        raise NotImplementedError

    def build(self, wavlm: WavLMModel, structure: Structure, **options) -> list[nn.Module]:
        """Swap the modules of this unit in `wavlm` for their kept sizes; return the new ones

        `options`: those of `folding.build_structured_wavlm` (e.g. `pruned_norms`).
        """
        return []

    def fold(self, state: State, masks: Masks, structure: Structure, **options) -> None:
        raise NotImplementedError


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


def fixed_params(config: WavLMConfig) -> int:
    """Parameters no unit kind prunes: positional convolution, post-LN norms, position table."""
    E = config.hidden_size
    kernel, groups = config.num_conv_pos_embeddings, config.num_conv_pos_embedding_groups
    # positional convolution: weight-norm magnitude (1, 1, k), direction, bias
    total = kernel + E * (E // groups) * kernel + E
    total += config.num_buckets * config.num_attention_heads  # layer 0's table, kept whole
    if not config.do_stable_layer_norm:
        # encoder norm and two norms per layer (pre-LN norms go with their blocks; pre-LN
        # configs drop the encoder norm, see WavLMFrontEnd)
        total += 2 * E + 4 * E * config.num_hidden_layers
    return total


def fixed_macs(config: WavLMConfig, frames: list[int]) -> int:
    """MACs of the positional convolution (never pruned), for CNN output lengths `frames`."""
    E = config.hidden_size
    kernel, groups = config.num_conv_pos_embeddings, config.num_conv_pos_embedding_groups
    positional_frames = frames[-1] + 2 * (kernel // 2) - kernel + 1
    return positional_frames * E * (E // groups) * kernel

