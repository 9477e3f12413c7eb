"""Architectures for random initialisation (no weights are downloaded).

`base_plus_config()` and `large_config()` reproduce the architectures of
microsoft/wavlm-base-plus and microsoft/wavlm-large; `tiny_config()` keeps the shape of either
layout ("base": post-LN, GroupNorm CNN; "large": pre-LN, LayerNorm CNN) of WavLM, HuBERT or
wav2vec 2.0 at a size that trains in seconds on a CPU (tests, quickstart, tutorials).
"""

from __future__ import annotations

from typing import Literal

from transformers import PretrainedConfig, WavLMConfig

from .architectures import ARCHITECTURES
from .config import FRONT_END_OVERRIDES


def _family(family: Literal["base", "large"]) -> dict:
    if family == "base":
        return {"feat_extract_norm": "group", "do_stable_layer_norm": False, "conv_bias": False}
    if family == "large":
        return {"feat_extract_norm": "layer", "do_stable_layer_norm": True, "conv_bias": True}
    raise ValueError(f"family={family!r}: expected 'base' or 'large'.")


def base_plus_config() -> WavLMConfig:
    """WavLM Base+ (94.4 M parameters): 12 layers, width 768, 12 heads, FFN 3072."""
    return WavLMConfig(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        **_family("base"), **FRONT_END_OVERRIDES,
    )


def large_config() -> WavLMConfig:
    """WavLM Large (316.6 M parameters): 24 layers, width 1024, 16 heads, FFN 4096."""
    return WavLMConfig(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        **_family("large"), **FRONT_END_OVERRIDES,
    )


def tiny_config(family: Literal["base", "large"] = "base", architecture: str = "wavlm",
                **overrides) -> PretrainedConfig:
    """A front end of the given layout small enough for CPU tests (about 60 k parameters)

    architecture: "wavlm" (default), "hubert" or "wav2vec2". A tiny HuBERT Base has no
    feature-projection norm (`feat_proj_layer_norm=False`, as distilled HuBERTs), so that
    both kinds of projection are exercised.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture={architecture!r}: expected one of {sorted(ARCHITECTURES)}.")
    arguments = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "conv_dim": (32, 32, 32, 32, 32, 32, 32),
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4,
        **_family(family),
        **FRONT_END_OVERRIDES,
    }
    if architecture == "hubert" and family == "base":
        arguments["feat_proj_layer_norm"] = False
    arguments.update(overrides)
    return ARCHITECTURES[architecture].config_class(**arguments)
