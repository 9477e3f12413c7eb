"""Option dictionaries merged with class-level defaults (pyannote's style), checked once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def merge_options(name: str, defaults: Mapping[str, Any], given: Mapping[str, Any] | None) -> dict:
    """`defaults` updated with `given`, or a ValueError naming the keys `defaults` lacks

    name: the option's name, for the error (e.g. "learning_rate").
    """
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"{name} has unknown keys {unknown}: expected some of {sorted(defaults)}.")
    return {**defaults, **given}
