"""Variants of a model's numerics: where two implementations of the same model compute apart.

A segmentation model is one architecture (WavLM, HuBERT, wav2vec 2.0, see `architectures.py`)
and one variant of the few computations implementations do differently. This project's own
models are "default"; DiariZen's are "diarizen", so that an imported DiariZen model computes
what DiariZen's code computes:

    numerics            default      diarizen     what it is
    layer_weighting     "softmax"    "linear"     hidden states weighted by softmax(w), or by
                                                  the raw w (DiariZen's Linear(L+1, 1))
    conv_output_scale   False        True         a fixed per-channel scale on the last CNN
                                                  output (DiariZen's `dummy_weight`)
    pruned_norms        "original"   "kept"       LayerNorms over pruned CNN channels count
                                                  the original channels, or the kept ones
    waveform_norm_eps   1e-7         1e-5         epsilon of the Large layout's per-waveform
                                                  normalisation

This module is the only place that knows them. A model's `variant` is a name of `VARIANTS`;
checkpoints written before variants existed hold the four numerics as hyper-parameters of
their own, which `variant_from_numerics` turns back into a variant (a name when they match
one, else the dict of the four, so that every such checkpoint loads as it computed).
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Real
from typing import Any

from .folding import check_pruned_norms
from .frontend import NORMALISATION_EPS

LAYER_WEIGHTINGS = ("softmax", "linear")
NUMERICS = {"layer_weighting": "softmax", "conv_output_scale": False, "pruned_norms": "original",
            "waveform_norm_eps": NORMALISATION_EPS}
VARIANTS: dict[str, dict[str, Any]] = {
    "default": dict(NUMERICS),
    "diarizen": {"layer_weighting": "linear", "conv_output_scale": True, "pruned_norms": "kept",
                 "waveform_norm_eps": 1e-5},
}


def numerics_of(variant: str | Mapping[str, Any]) -> dict[str, Any]:
    """The four numerics of a variant (a name of VARIANTS, or a dict of numerics)

    Raises
    ------
    ValueError
        Naming an unknown variant, an unknown numeric or a bad value, and what was expected.
    """
    if isinstance(variant, str):
        if variant not in VARIANTS:
            raise ValueError(f"variant={variant!r}: expected one of {sorted(VARIANTS)}.")
        return dict(VARIANTS[variant])
    if not isinstance(variant, Mapping):
        raise ValueError(f"variant={variant!r}: expected one of {sorted(VARIANTS)}.")
    unknown = sorted(set(variant) - set(NUMERICS))
    if unknown:
        raise ValueError(f"variant has unknown numerics {unknown}: expected some of "
                         f"{list(NUMERICS)}.")
    numerics = {**NUMERICS, **variant}
    if numerics["layer_weighting"] not in LAYER_WEIGHTINGS:
        raise ValueError(f"layer_weighting={numerics['layer_weighting']!r}: expected one of "
                         f"{list(LAYER_WEIGHTINGS)}.")
    check_pruned_norms(numerics["pruned_norms"])
    if not isinstance(numerics["conv_output_scale"], bool):
        raise ValueError(f"conv_output_scale={numerics['conv_output_scale']!r}: expected a bool.")
    eps = numerics["waveform_norm_eps"]
    if isinstance(eps, bool) or not isinstance(eps, Real) or not eps > 0:
        raise ValueError(f"waveform_norm_eps={eps!r}: expected a positive number.")
    return numerics


def variant_from_numerics(numerics: Mapping[str, Any]) -> str | dict[str, Any]:
    """The variant of (some of) the four numerics: its name, or the dict of all four."""
    full = numerics_of(dict(numerics))
    for name, values in VARIANTS.items():
        if values == full:
            return name
    return full
