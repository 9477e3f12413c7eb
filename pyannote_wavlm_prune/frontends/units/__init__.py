"""The prunable unit kinds of a front end, one module each, their registry, and what they share.

Adding a unit kind: write a `UnitKind` subclass in a module of this package, then add it to
`UNIT_KINDS` (the order is the order in which gates attach, sizes are read, modules are built
and folding runs; block kinds come after the units inside them). A kind inside a block names
it in `block`: `within_blocks`, the cost totals and `check_blocks` below are where the two
meet.
"""

from __future__ import annotations

from transformers import PretrainedConfig

from ..architectures import architecture_of
from .base import (
    EmptyLayerError,
    Fields,
    Masks,
    Number,
    Panel,
    Sizes,
    State,
    UnitKind,
)
from .blocks import AttentionBlocks, FeedForwardBlocks, RemovedBlock
from .conv import ConvChannels, PrunedFeatureProjection, PrunedLayerNormConvLayer
from .ffn import FeedForwardUnits, PrunedFeedForward, PrunedWavLMFeedForward
from .heads import AttentionHeads

UNIT_KINDS: dict[str, UnitKind] = {
    unit.name: unit
    for unit in (ConvChannels(), AttentionHeads(), FeedForwardUnits(), AttentionBlocks(),
                 FeedForwardBlocks())
}
UNITS = tuple(UNIT_KINDS)  # ("conv", "head", "ffn", "attention_layer", "ffn_layer")
DEFAULT_UNITS = ("conv", "head", "ffn")


def within_blocks(masks: Masks) -> dict[str, list]:
    """`masks` with each block's gate multiplied into the masks of the units inside it

    A unit inside a removed (or closed) block is then closed, and a kept unit's value carries
    its block's: what `kept` and `fold` of those units read. The products are float64 (the
    gated network applies the two values one after the other, in its own precision).
    """
    result = {unit: list(group) for unit, group in masks.items()}
    for unit, kind in UNIT_KINDS.items():
        if kind.block and unit in result:
            result[unit] = [mask.double() * block.double()
                            for mask, block in zip(result[unit], masks[kind.block], strict=True)]
    return result


def _weighted(kind: UnitKind, terms: Number | list[Number], sizes: Sizes) -> Number:
    """A unit kind's cost: per-layer terms of units inside a block weighted by its presence."""
    if not kind.block:
        return terms
    presence = UNIT_KINDS[kind.block].presence(sizes)
    return sum(term * present for term, present in zip(terms, presence, strict=True))


def total_params(config: PretrainedConfig, sizes: Sizes) -> Number:
    """Parameters of a front end whose unit kinds have `sizes` (exact or expected)."""
    fixed = architecture_of(config).fixed_params(config)  # what no unit kind prunes
    return fixed + sum(_weighted(kind, kind.params(config, sizes), sizes)
                                      for kind in UNIT_KINDS.values())


def total_macs(config: PretrainedConfig, sizes: Sizes, frames: list[int]) -> Number:
    """MACs of a front end whose unit kinds have `sizes`, for CNN output lengths `frames`."""
    fixed = architecture_of(config).fixed_macs(config, frames)
    return fixed + sum(_weighted(kind, kind.macs(config, sizes, frames), sizes)
                       for kind in UNIT_KINDS.values())


def units_cost(config: PretrainedConfig, sizes: Sizes, units, metric: str,
               frames: list[int] | None = None) -> Number:
    """The share of the cost ("params" or "macs") that the unit kinds `units` carry (what
    pruning them can remove; the parts no unit kind prunes are not in it)."""
    kinds = [UNIT_KINDS[unit] for unit in units]
    if metric == "params":
        return sum(_weighted(kind, kind.params(config, sizes), sizes) for kind in kinds)
    return sum(_weighted(kind, kind.macs(config, sizes, frames), sizes) for kind in kinds)


def check_blocks(fields: Fields) -> None:
    """Raise if a removed block keeps units of a kind inside it."""
    for kind in UNIT_KINDS.values():
        if not kind.block:
            continue
        block = UNIT_KINDS[kind.block]
        for layer, (present, count) in enumerate(zip(fields[block.field], kind.layer_counts(fields),
                                                     strict=True)):
            if not present and count:
                raise ValueError(
                    f"structure removes {block.title} block {layer} but keeps "
                    f"{kind.describe_layer(fields, layer)}: expected none in a removed block."
                )


__all__ = [
    "DEFAULT_UNITS",
    "EmptyLayerError",
    "UNITS",
    "UNIT_KINDS",
    "AttentionBlocks",
    "AttentionHeads",
    "ConvChannels",
    "FeedForwardBlocks",
    "FeedForwardUnits",
    "Fields",
    "Masks",
    "Panel",
    "PrunedFeatureProjection",
    "PrunedFeedForward",
    "PrunedLayerNormConvLayer",
    "PrunedWavLMFeedForward",
    "RemovedBlock",
    "Sizes",
    "State",
    "UnitKind",
    "check_blocks",
    "total_macs",
    "total_params",
    "units_cost",
    "within_blocks",
]
