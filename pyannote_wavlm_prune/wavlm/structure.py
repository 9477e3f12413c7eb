"""The size of a (pruned) WavLM, as a plain dict that YAML, hparams and checkpoints can hold.

A structure is relative to the original (teacher) `WavLMConfig`:

    {
        "conv_channels": [C_1, ..., C_7],       # kept output channels of each CNN layer
        "kept_heads": [[h, ...], ...],          # per transformer layer, original head indices
        "ffn_widths": [F_1, ..., F_L],          # kept FFN intermediate units per layer
        # optional (default: every block present)
        "attention_layers": [bool] * L,         # False: the whole attention block is removed
        "ffn_layers": [bool] * L,               # False: the whole FFN block is removed
    }

A layer with no kept head (or FFN width 0) but its block present still adds the block's
output bias; a removed block adds nothing (and, in pre-LN layers, its layer norm goes too).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from numbers import Integral
from typing import Any

from transformers import WavLMConfig

REQUIRED_KEYS = ("conv_channels", "kept_heads", "ffn_widths")
OPTIONAL_KEYS = ("attention_layers", "ffn_layers")

# The released WavLM Base+ structure at 80 % sparsity (METHOD.md section 6), with the head
# indices DiariZen keeps (its `wavlm_base_s80_md`). DiariZen also removes attention blocks 8
# and 9 (no head left) with their output biases: `published.py` has that exact structure;
# this one keeps the two biases (2 x 768 parameters), as the project's figures were made.
REFERENCE_BASE_PLUS_S80: dict[str, list] = {
    "conv_channels": [90, 161, 173, 181, 351, 155, 137],
    "kept_heads": [
        [1, 6], [5, 7, 8], [0, 3, 9], [0, 1, 4, 8, 11], [6, 8], [0],
        [7, 8, 10, 11], [0, 1, 4, 8], [], [], [4, 7], [5],
    ],
    "ffn_widths": [666, 660, 649, 1080, 237, 299, 437, 573, 53, 80, 211, 334],
}


def full_structure(config: WavLMConfig) -> dict[str, list]:
    """The structure of the unpruned architecture of `config`."""
    num_layers = config.num_hidden_layers
    return {
        "conv_channels": [int(c) for c in config.conv_dim],
        "kept_heads": [list(range(config.num_attention_heads)) for _ in range(num_layers)],
        "ffn_widths": [int(config.intermediate_size)] * num_layers,
    }


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _check_list(structure: Mapping, key: str, length: int, what: str) -> list:
    value = structure[key]
    if not isinstance(value, (list, tuple)) or len(value) != length:
        got = f"length {len(value)}" if isinstance(value, (list, tuple)) else type(value).__name__
        raise ValueError(f"structure[{key!r}] has {got}: expected a list of {length} {what}.")
    return list(value)


def validate_structure(structure: Mapping[str, Any], config: WavLMConfig) -> dict[str, list]:
    """Return a normalised copy of `structure` (plain ints, lists, both optional keys filled in)

    Raises
    ------
    ValueError
        Naming the bad value and what was expected: a missing or unknown key, a wrong length,
        a CNN layer with no channel or more than the original, a head index out of range,
        repeated or unsorted, an FFN width out of [0, intermediate_size], or a removed block
        that still keeps heads or FFN units.
    """
    if not isinstance(structure, Mapping):
        raise ValueError(f"structure is a {type(structure).__name__}: expected a dict.")
    missing = [key for key in REQUIRED_KEYS if key not in structure]
    if missing:
        raise ValueError(f"structure lacks {missing}: expected keys {list(REQUIRED_KEYS)}.")
    unknown = sorted(set(structure) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        raise ValueError(
            f"structure has unknown keys {unknown}: expected {list(REQUIRED_KEYS)} and "
            f"optionally {list(OPTIONAL_KEYS)}."
        )

    num_conv = len(config.conv_dim)
    num_layers = config.num_hidden_layers
    num_heads = config.num_attention_heads

    conv_channels = _check_list(structure, "conv_channels", num_conv, "ints (one per CNN layer)")
    for layer, (channels, original) in enumerate(zip(conv_channels, config.conv_dim, strict=True)):
        if not _is_int(channels) or not 1 <= channels <= original:
            raise ValueError(
                f"structure['conv_channels'][{layer}] = {channels!r}: expected an int in "
                f"[1, {original}] (a CNN layer without channel would cut the input off)."
            )

    kept_heads = _check_list(structure, "kept_heads", num_layers, "lists of head indices")
    for layer, heads in enumerate(kept_heads):
        if not isinstance(heads, (list, tuple)):
            raise ValueError(
                f"structure['kept_heads'][{layer}] = {heads!r}: expected a list of head indices."
            )
        for head in heads:
            if not _is_int(head) or not 0 <= head < num_heads:
                raise ValueError(
                    f"structure['kept_heads'][{layer}] holds {head!r}: expected head indices "
                    f"in [0, {num_heads - 1}]."
                )
        if len(set(heads)) != len(heads):
            raise ValueError(f"structure['kept_heads'][{layer}] = {list(heads)} repeats a head.")
        if list(heads) != sorted(heads):
            raise ValueError(
                f"structure['kept_heads'][{layer}] = {list(heads)}: expected increasing indices."
            )

    ffn_widths = _check_list(structure, "ffn_widths", num_layers, "ints (one per layer)")
    for layer, width in enumerate(ffn_widths):
        if not _is_int(width) or not 0 <= width <= config.intermediate_size:
            raise ValueError(
                f"structure['ffn_widths'][{layer}] = {width!r}: expected an int in "
                f"[0, {config.intermediate_size}]."
            )

    blocks = {}
    for key in OPTIONAL_KEYS:
        if key not in structure:
            blocks[key] = [True] * num_layers
            continue
        flags = _check_list(structure, key, num_layers, "bools (False: block removed)")
        for layer, flag in enumerate(flags):
            if not isinstance(flag, bool):
                raise ValueError(f"structure[{key!r}][{layer}] = {flag!r}: expected a bool.")
        blocks[key] = flags
    for layer in range(num_layers):
        if not blocks["attention_layers"][layer] and kept_heads[layer]:
            raise ValueError(
                f"structure removes attention block {layer} but keeps heads "
                f"{list(kept_heads[layer])}: expected no head in a removed block."
            )
        if not blocks["ffn_layers"][layer] and ffn_widths[layer]:
            raise ValueError(
                f"structure removes FFN block {layer} but keeps width {ffn_widths[layer]}: "
                "expected 0 in a removed block."
            )

    return {
        "conv_channels": [int(c) for c in conv_channels],
        "kept_heads": [[int(h) for h in heads] for heads in kept_heads],
        "ffn_widths": [int(w) for w in ffn_widths],
        "attention_layers": list(blocks["attention_layers"]),
        "ffn_layers": list(blocks["ffn_layers"]),
    }


def compact_structure(structure: Mapping[str, Any]) -> dict[str, list]:
    """A copy of a (valid) structure without the optional keys that say nothing is removed."""
    compact = copy.deepcopy(dict(structure))
    for key in OPTIONAL_KEYS:
        if key in compact and all(compact[key]):
            del compact[key]
    return compact
