"""The WavLM structures DiariZen publishes, by the names its `config.toml` gives them.

A DiariZen hub repository (BUT-FIT/diarizen-wavlm-*) names its WavLM in `[model.args]
wavlm_src`, one of the structures of DiariZen's `wavlm_config.py`. Each name here maps to
the transformers `WavLMConfig` of the original (unpruned) architecture and to the structure
(this project's format, see `structure.py`) relative to it:

    name                 architecture   kept heads, FFN widths, removed blocks
    wavlm_base           Base (= Base+) unpruned
    wavlm_base_plus      Base+          unpruned (same architecture as wavlm_base)
    wavlm_large          Large          unpruned
    wavlm_base_s80_md    Base+          80 % sparsity, attention blocks 8 and 9 removed
    wavlm_large_s80_md   Large          80 % sparsity, attention blocks 9, 12, 16, 17 removed

Block indices are 0-based. Kept heads are indices among the original heads of a layer,
as DiariZen keeps them (e.g. [1, 6] in layer 0 of wavlm_base_s80_md).

`REFERENCE_BASE_PLUS_S80` is wavlm_base_s80_md on this project's Base+ preset, with the two
attention blocks that keep no head still present (their output biases, 2 x 768 parameters):
the structure the project's figures were measured with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import WavLMConfig

from .config import FRONT_END_OVERRIDES
from .presets import base_plus_config
from .structure import Structure

# The architecture of each family as DiariZen builds it (note: no CNN bias in Large either)
_FAMILIES = {
    "base": {
        "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
        "intermediate_size": 3072, "feat_extract_norm": "group", "do_stable_layer_norm": False,
    },
    "large": {
        "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
        "intermediate_size": 4096, "feat_extract_norm": "layer", "do_stable_layer_norm": True,
    },
}
_COMMON = {
    "conv_dim": (512,) * 7, "conv_kernel": (10, 3, 3, 3, 3, 2, 2),
    "conv_stride": (5, 2, 2, 2, 2, 2, 2), "conv_bias": False,
    "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16,
    "num_buckets": 320, "max_bucket_distance": 800,
    "hidden_dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.0,
    "feat_proj_dropout": 0.1,
}

_BASE_S80 = {
    "conv_channels": [90, 161, 173, 181, 351, 155, 137],
    "kept_heads": [
        [1, 6], [5, 7, 8], [0, 3, 9], [0, 1, 4, 8, 11], [6, 8], [0],
        [7, 8, 10, 11], [0, 1, 4, 8], [], [], [4, 7], [5],
    ],
    "ffn_widths": [666, 660, 649, 1080, 237, 299, 437, 573, 53, 80, 211, 334],
    "attention_layers": [True] * 8 + [False, False] + [True, True],
}

_LARGE_S80_REMOVED_ATTENTION = (9, 12, 16, 17)
_LARGE_S80 = {
    "conv_channels": [512, 153, 224, 255, 302, 368, 211],
    "kept_heads": [
        [1, 2, 4, 5, 6], [9, 10, 14], [0, 1, 2, 4, 5, 7], [1, 4, 7, 12, 13, 14],
        [0, 2, 3, 4, 13], [1, 7, 13, 14, 15], [11, 13, 15], [2, 3, 4, 8, 15],
        [2, 5, 6, 15], [], [0, 1], [1, 3, 5, 12],
        [], [4, 7, 11], [6, 9], [11],
        [], [], [14], [5, 15],
        [0, 2, 8, 11, 13, 15], [0, 1, 3, 4, 5, 6, 7, 10, 13],
        [0, 1, 3, 6, 7, 9, 10, 11, 12, 14], [1, 2, 3, 4, 7, 13, 14, 15],
    ],
    "ffn_widths": [
        1092, 925, 759, 646, 745, 615, 684, 958, 286, 294, 406, 377,
        463, 542, 298, 236, 96, 104, 134, 211, 473, 1011, 1770, 1316,
    ],
    "attention_layers": [index not in _LARGE_S80_REMOVED_ATTENTION for index in range(24)],
}

# name -> (family, structure or None for the unpruned architecture)
PUBLISHED_STRUCTURES: dict[str, tuple[str, dict | None]] = {
    "wavlm_base": ("base", None),
    "wavlm_base_plus": ("base", None),
    "wavlm_large": ("large", None),
    "wavlm_base_s80_md": ("base", _BASE_S80),
    "wavlm_large_s80_md": ("large", _LARGE_S80),
}


def published_config(family: str, **overrides: Any) -> WavLMConfig:
    """The WavLMConfig of DiariZen's "base" or "large" architecture (front-end overrides set)

    `overrides` change config entries (e.g. a smaller `hidden_size` for tests).
    """
    if family not in _FAMILIES:
        raise ValueError(f"family={family!r}: expected one of {sorted(_FAMILIES)}.")
    arguments = {**_COMMON, **_FAMILIES[family], **overrides, **FRONT_END_OVERRIDES}
    return WavLMConfig(**arguments)


def published_structure(name: str) -> tuple[WavLMConfig, Structure]:
    """The original WavLMConfig and the structure (relative to it) of a published name

    Parameters
    ----------
    name : str
        One of `PUBLISHED_STRUCTURES` (DiariZen's `wavlm_src`), case-insensitive.

    Returns
    -------
    config : WavLMConfig
        Unpruned architecture.
    structure : Structure
        Relative to `config`; the full structure of `config` for the unpruned names.

    Raises
    ------
    ValueError
        For an unknown name, listing the known ones and how to give a structure instead.
    """
    key = str(name).lower()
    if key not in PUBLISHED_STRUCTURES:
        raise ValueError(
            f"Unknown WavLM structure {name!r}: expected one of {sorted(PUBLISHED_STRUCTURES)}. "
            "For another structure, pass it explicitly: `structure=` (a dict with "
            "'family' ('base' or 'large'), 'conv_channels', 'kept_heads', 'ffn_widths' and "
            "optionally 'attention_layers', 'ffn_layers') or `--structure FILE.yaml`."
        )
    family, structure = PUBLISHED_STRUCTURES[key]
    config = published_config(family)
    if structure is None:
        return config, Structure.full(config)
    return config, Structure.from_dict(structure, config)


def structure_with_family(description: Mapping[str, Any]) -> tuple[WavLMConfig, Structure]:
    """The config and structure of `{"family": "base" | "large", <structure keys>}`

    What `structure=` (or a `--structure` YAML/JSON file) gives for a WavLM that has no
    published name. An optional "config" entry overrides entries of the family's
    architecture (e.g. {"hidden_size": 64, "num_hidden_layers": 4}); the structure is
    validated against the result.
    """
    if not isinstance(description, Mapping) or "family" not in description:
        raise ValueError(
            f"structure={description!r}: expected a dict with a 'family' key ('base' or "
            "'large') beside the structure keys (conv_channels, kept_heads, ffn_widths).")
    description = dict(description)
    overrides = description.pop("config", None) or {}
    if not isinstance(overrides, Mapping):
        raise ValueError(f"structure['config'] = {overrides!r}: expected a dict of WavLMConfig "
                         "entries.")
    config = published_config(description.pop("family"), **overrides)
    return config, Structure.from_dict(description, config)


REFERENCE_BASE_PLUS_S80 = Structure.from_dict(
    {key: value for key, value in _BASE_S80.items() if key != "attention_layers"},
    base_plus_config(),
)
