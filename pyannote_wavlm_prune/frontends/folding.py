"""Physically smaller front ends: building one at a structure's sizes, folding gates into one.

`build_structured_wavlm(structure)` builds a transformers model whose modules have
the sizes of `structure` (random weights); `WavLMFrontEnd(config, structure=...)` uses it.
`fold_frontend(gated)` turns a gated front end into the state dict and `Structure` of the
pruned front end that computes what the gated one computes in eval mode (to float rounding).
Both iterate over the unit kinds (`units/`), which hold what each unit means:

- kept units are those with a non-zero eval-mode gate; each kept soft gate value is folded
  into weights (the CNN layer's own rows or norm affine; out_proj input columns per head;
  output_dense input columns per FFN unit; a block gate into the block's output layer);
- a layer with no kept head (no FFN unit) keeps its block's output bias, a constant;
  a removed block keeps nothing, its pre-LN layer norm included;
- the relative position table of layer 0 is kept whole, whatever heads remain;
- what no unit prunes (positional convolution, layer norms) is kept as it is.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

from .architectures import architecture_of
from .gating import deterministic_masks, frontend_options, is_gated, kept_structure
from .structure import Structure
from .units import UNIT_KINDS, Masks, PrunedFeatureProjection, State, within_blocks

_PARAMETRIZED = ".parametrizations.weight.original"
# How LayerNorms over pruned CNN channels normalise (see `build_structured_wavlm`)
PRUNED_NORMS = ("original", "kept")


def check_pruned_norms(pruned_norms: str) -> str:
    """`pruned_norms` itself, or a ValueError naming the accepted values."""
    if pruned_norms not in PRUNED_NORMS:
        raise ValueError(f"pruned_norms={pruned_norms!r}: expected one of {list(PRUNED_NORMS)}.")
    return pruned_norms


def build_structured_wavlm(structure: Structure, pruned_norms: str = "original") -> PreTrainedModel:
    """A transformers model (`WavLMModel`, `HubertModel`, ...) with the sizes of `structure`

    Random weights.

    Stock modules are kept where sizes allow (CNN layers, stock encoder layers, norms,
    positional convolution); attention always runs through the architecture's pruned attention
    and FFNs through `PrunedFeedForward`, even at full size, so every structure takes the same
    code path. `wavlm.config` is the original (teacher) config: no stock config describes
    a pruned WavLM, the structure does.

    `pruned_norms` says how LayerNorms over pruned CNN channels normalise: "original"
    (default) over the original channel count, the pruned channels counting as zeros (what
    a gated network computes); "kept" over the kept channels alone (DiariZen's models).
    """
    check_pruned_norms(pruned_norms)
    config = structure.config
    # stock CNN layers and feature projection at the kept sizes; a 1-unit FFN placeholder
    # that the FFN units replace (saves initialising full-size FFNs)
    shape_config = type(config).from_dict(config.to_dict())
    shape_config.conv_dim = list(structure.conv_channels)
    shape_config.intermediate_size = 1
    wavlm = architecture_of(config).model_class(shape_config)
    wavlm.config = config
    new_modules: list[nn.Module] = []
    for unit in UNIT_KINDS.values():
        new_modules.extend(unit.build(wavlm, structure, pruned_norms=pruned_norms))

    # WavLM's initialisation for the new modules (normal(0, 0.02) linears, ...)
    for module in new_modules:
        module.apply(wavlm._init_weights)
        if isinstance(module, PrunedFeatureProjection):
            bound = module.projection.in_features ** -0.5
            nn.init.uniform_(module.projection.weight, -bound, bound)
            nn.init.uniform_(module.projection.bias, -bound, bound)
            nn.init.zeros_(module.pruned_channels_projection)
    return wavlm


@torch.no_grad()
def fold_frontend(gated: nn.Module, masks: Masks | None = None) -> tuple[State, Structure]:
    """The state dict and structure of the pruned front end equivalent to `gated` in eval mode

    `masks`: the eval-mode masks to prune by (every unit kind, one tensor per gate group),
    e.g. those of `budget.masks_at_budget`. Defaults to the gates' deterministic masks.
    `gated` is left untouched. The state dict (keys "wavlm.<module path>.<parameter>", on
    `gated`'s device and dtype) loads strictly into `WavLMFrontEnd(gated.config,
    structure=structure)` with `gated`'s options (`pruned_norms`, `conv_output_scale`).
    `gated` may itself be pruned: the structure is then a smaller one, in original indices.

    Raises
    ------
    ValueError
        If `gated` carries no gates; `units.EmptyLayerError` if its gates close every
        channel of a CNN layer.
    """
    if not is_gated(gated):
        raise ValueError(
            "The front end carries no gates: attach_frontend_gates() it and train the gates "
            "before pruning."
        )
    masks = deterministic_masks(gated) if masks is None else masks
    structure = kept_structure(gated, masks)
    state = {
        # a gated out_proj keeps its unmasked weight under the parametrization's name
        key.removesuffix(_PARAMETRIZED) + ".weight" if key.endswith(_PARAMETRIZED) else key:
            tensor.detach().clone()
        for key, tensor in gated.state_dict().items()
        if not key.startswith("gates.")
    }
    masks = within_blocks(masks)
    for unit in UNIT_KINDS.values():
        unit.fold(state, masks, structure, **frontend_options(gated))
    return state, structure
