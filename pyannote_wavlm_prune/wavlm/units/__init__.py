"""The prunable unit kinds of WavLM, one module each, and their registry.

Adding a unit kind: write a `UnitKind` subclass in a module of this package, then add it to
`UNIT_KINDS` (the order is the order in which gates attach, sizes are read and folding runs;
block kinds come after the units whose modules they remove).
"""

from .base import EmptyLayerError, Masks, Sizes, State, UnitKind, fixed_macs, fixed_params
from .blocks import AttentionBlocks, FeedForwardBlocks, RemovedBlock
from .conv import ConvChannels, PrunedFeatureProjection, PrunedLayerNormConvLayer
from .ffn import FeedForwardUnits, PrunedWavLMFeedForward
from .heads import AttentionHeads

UNIT_KINDS: dict[str, UnitKind] = {
    unit.name: unit
    for unit in (ConvChannels(), AttentionHeads(), FeedForwardUnits(), AttentionBlocks(),
                 FeedForwardBlocks())
}
UNITS = tuple(UNIT_KINDS)  # ("conv", "head", "ffn", "attention_layer", "ffn_layer")
DEFAULT_UNITS = ("conv", "head", "ffn")

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
    "Masks",
    "PrunedFeatureProjection",
    "PrunedLayerNormConvLayer",
    "PrunedWavLMFeedForward",
    "RemovedBlock",
    "Sizes",
    "State",
    "UnitKind",
    "fixed_macs",
    "fixed_params",
]
