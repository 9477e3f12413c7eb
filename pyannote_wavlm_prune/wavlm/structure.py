"""The sizes of a (pruned) WavLM: `Structure`, validated once against the original config.

A structure is relative to the original (teacher) `WavLMConfig`:

    conv_channels     (C_1, ..., C_7)        kept output channels of each CNN layer
    kept_heads        ((h, ...), ...)        per transformer layer, original head indices
    ffn_widths        (F_1, ..., F_L)        kept FFN intermediate units per layer
    attention_layers  (bool, ...)            False: the whole attention block is removed
    ffn_layers        (bool, ...)            False: the whole FFN block is removed

A layer with no kept head (or FFN width 0) but its block present still adds the block's
output bias; a removed block adds nothing (and, in pre-LN layers, its layer norm goes too).

In hyper-parameters, YAML and checkpoints a structure is the plain dict of `to_dict()` (the
two block keys only when a block is removed), the format checkpoints have always used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any

from transformers import WavLMConfig

from .config import conv_frames
from .units import UNIT_KINDS, Sizes, fixed_macs, fixed_params

REQUIRED_KEYS = ("conv_channels", "kept_heads", "ffn_widths")
OPTIONAL_KEYS = ("attention_layers", "ffn_layers")


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _check_list(data: Mapping, key: str, length: int, what: str) -> list:
    value = data[key]
    if not isinstance(value, (list, tuple)) or len(value) != length:
        got = f"length {len(value)}" if isinstance(value, (list, tuple)) else type(value).__name__
        raise ValueError(f"structure[{key!r}] has {got}: expected a list of {length} {what}.")
    return list(value)


@dataclass(frozen=True)
class Structure:
    """Kept units of a WavLM, relative to the original architecture `config`

    Make one with `Structure.from_dict(data, config)` or `Structure.full(config)`: both
    validate it against `config`, once. Equality compares the sizes only.
    """

    conv_channels: tuple[int, ...]
    kept_heads: tuple[tuple[int, ...], ...]
    ffn_widths: tuple[int, ...]
    attention_layers: tuple[bool, ...]
    ffn_layers: tuple[bool, ...]
    config: WavLMConfig = field(compare=False, repr=False)

    @classmethod
    def full(cls, config: WavLMConfig) -> Structure:
        """The unpruned architecture of `config`."""
        num_layers = config.num_hidden_layers
        return cls.from_dict(
            {
                "conv_channels": list(config.conv_dim),
                "kept_heads": [list(range(config.num_attention_heads))] * num_layers,
                "ffn_widths": [config.intermediate_size] * num_layers,
            },
            config,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | Structure, config: WavLMConfig) -> Structure:
        """Validate `data` (a dict as `to_dict()` writes it, or a Structure) against `config`

        Raises
        ------
        ValueError
            Naming the bad value and what was expected: a missing or unknown key, a wrong
            length, a CNN layer with no channel or more than the original, a head index out
            of range, repeated or unsorted, an FFN width out of [0, intermediate_size], or a
            removed block that still keeps heads or FFN units.
        """
        if isinstance(data, Structure):
            data = data.to_dict()
        if not isinstance(data, Mapping):
            raise ValueError(f"structure is a {type(data).__name__}: expected a dict.")
        missing = [key for key in REQUIRED_KEYS if key not in data]
        if missing:
            raise ValueError(f"structure lacks {missing}: expected keys {list(REQUIRED_KEYS)}.")
        unknown = sorted(set(data) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
        if unknown:
            raise ValueError(
                f"structure has unknown keys {unknown}: expected {list(REQUIRED_KEYS)} and "
                f"optionally {list(OPTIONAL_KEYS)}."
            )
        num_layers = config.num_hidden_layers
        num_heads = config.num_attention_heads

        conv_channels = _check_list(data, "conv_channels", len(config.conv_dim),
                                    "ints (one per CNN layer)")
        for layer, (channels, original) in enumerate(zip(conv_channels, config.conv_dim,
                                                         strict=True)):
            if not _is_int(channels) or not 1 <= channels <= original:
                raise ValueError(
                    f"structure['conv_channels'][{layer}] = {channels!r}: expected an int in "
                    f"[1, {original}] (a CNN layer without channel would cut the input off)."
                )

        kept_heads = _check_list(data, "kept_heads", num_layers, "lists of head indices")
        for layer, heads in enumerate(kept_heads):
            if not isinstance(heads, (list, tuple)):
                raise ValueError(
                    f"structure['kept_heads'][{layer}] = {heads!r}: expected a list of head "
                    "indices."
                )
            for head in heads:
                if not _is_int(head) or not 0 <= head < num_heads:
                    raise ValueError(
                        f"structure['kept_heads'][{layer}] holds {head!r}: expected head "
                        f"indices in [0, {num_heads - 1}]."
                    )
            if len(set(heads)) != len(heads):
                raise ValueError(f"structure['kept_heads'][{layer}] = {list(heads)} repeats a head.")
            if list(heads) != sorted(heads):
                raise ValueError(
                    f"structure['kept_heads'][{layer}] = {list(heads)}: expected increasing "
                    "indices."
                )

        ffn_widths = _check_list(data, "ffn_widths", num_layers, "ints (one per layer)")
        for layer, width in enumerate(ffn_widths):
            if not _is_int(width) or not 0 <= width <= config.intermediate_size:
                raise ValueError(
                    f"structure['ffn_widths'][{layer}] = {width!r}: expected an int in "
                    f"[0, {config.intermediate_size}]."
                )

        blocks = {}
        for key in OPTIONAL_KEYS:
            if key not in data:
                blocks[key] = [True] * num_layers
                continue
            flags = _check_list(data, key, num_layers, "bools (False: block removed)")
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

        return cls(
            conv_channels=tuple(int(c) for c in conv_channels),
            kept_heads=tuple(tuple(int(h) for h in heads) for heads in kept_heads),
            ffn_widths=tuple(int(w) for w in ffn_widths),
            attention_layers=tuple(blocks["attention_layers"]),
            ffn_layers=tuple(blocks["ffn_layers"]),
            config=config,
        )

    def to_dict(self) -> dict[str, list]:
        """Plain lists and ints (for hparams, YAML, JSON); block keys only if a block is removed."""
        data: dict[str, list] = {
            "conv_channels": list(self.conv_channels),
            "kept_heads": [list(heads) for heads in self.kept_heads],
            "ffn_widths": list(self.ffn_widths),
        }
        for key in OPTIONAL_KEYS:
            flags = getattr(self, key)
            if not all(flags):
                data[key] = list(flags)
        return data

    @property
    def is_full(self) -> bool:
        """Whether nothing of `config`'s architecture is removed."""
        return self == Structure.full(self.config)

    def sizes(self) -> Sizes:
        """Per-layer sizes of every unit kind, as the cost model reads them."""
        sizes: Sizes = {}
        for unit in UNIT_KINDS.values():
            sizes.update(unit.exact_sizes(self))
        return sizes

    def params(self) -> int:
        """Exact number of WavLM parameters of this structure (see `cost`)."""
        sizes = self.sizes()
        return int(fixed_params(self.config)
                   + sum(unit.params(self.config, sizes) for unit in UNIT_KINDS.values()))

    def macs(self, num_samples: int) -> int:
        """Exact WavLM multiply-accumulates for one waveform of `num_samples` samples."""
        sizes, frames = self.sizes(), conv_frames(self.config, num_samples)
        return int(fixed_macs(self.config, frames)
                   + sum(unit.macs(self.config, sizes, frames) for unit in UNIT_KINDS.values()))

    def cost(self, metric: str = "params", num_samples: int | None = None) -> int:
        """`params()` or `macs(num_samples)`."""
        check_metric(metric, num_samples)
        return self.params() if metric == "params" else self.macs(num_samples)

    def sparsity(self, metric: str = "params", num_samples: int | None = None) -> float:
        """1 - cost(self) / cost(unpruned `config`), cost being "params" or "macs"."""
        full = Structure.full(self.config)
        return 1.0 - self.cost(metric, num_samples) / full.cost(metric, num_samples)

    def summary(self, num_samples: int | None = None) -> str:
        """A few lines for a person: WavLM parameters (and MACs) kept, and the kept units

        num_samples: length of one chunk, to count MACs too (none without it).
        """
        full = Structure.full(self.config)
        lines = [f"WavLM parameters: {self.params():,} of {full.params():,} "
                 f"(sparsity {self.sparsity('params'):.4f})"]
        if num_samples is not None:
            lines.append(f"WavLM MACs per chunk of {num_samples:,} samples: "
                         f"{self.macs(num_samples):,} of {full.macs(num_samples):,} "
                         f"(sparsity {self.sparsity('macs', num_samples):.4f})")
        config = self.config
        lines.append(f"CNN channels: {' '.join(map(str, self.conv_channels))} "
                     f"(of {' '.join(map(str, config.conv_dim))})")
        lines.append(f"heads per layer: {' '.join(str(len(h)) for h in self.kept_heads)} "
                     f"(of {config.num_attention_heads})")
        lines.append(f"FFN widths: {' '.join(map(str, self.ffn_widths))} "
                     f"(of {config.intermediate_size})")
        for key in OPTIONAL_KEYS:
            removed = [index for index, kept in enumerate(getattr(self, key)) if not kept]
            if removed:
                lines.append(f"{key.replace('_', ' ')} removed: {' '.join(map(str, removed))}")
        return "\n".join(lines)


METRICS = ("params", "macs")


def check_metric(metric: str, num_samples: int | None) -> None:
    """Raise if `metric` is not a cost metric, or "macs" comes without a positive length."""
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r}: expected one of {METRICS}.")
    if metric == "macs" and (num_samples is None or num_samples < 1):
        raise ValueError(f"num_samples={num_samples!r}: metric='macs' needs a positive length.")
