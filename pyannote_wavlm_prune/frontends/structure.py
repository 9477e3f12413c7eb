"""The sizes of a pruned front end: `Structure`, validated once against the original config.

A structure is relative to the original (teacher) config. Its fields are those of the unit
kinds (`units/`), each kind owning its own (their validation, dict form, summary line and
plot panel); with the kinds of this project:

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
from typing import Any

from transformers import PretrainedConfig

from .architectures import architecture_of
from .config import conv_frames
from .units import UNIT_KINDS, Fields, Panel, Sizes, check_blocks, total_macs, total_params


def _keys() -> tuple[list[str], list[str]]:
    """The dict keys every structure has, and those it may omit (nothing removed)."""
    required = [name for kind in UNIT_KINDS.values() if not kind.optional for name in kind.fields]
    optional = [name for kind in UNIT_KINDS.values() if kind.optional for name in kind.fields]
    return required, optional


class Structure:
    """Kept units of a front end, relative to the original architecture `config`

    Make one with `Structure.from_dict(data, config)` or `Structure.full(config)`: both
    validate it against `config`, once. Each unit kind's fields are attributes (e.g.
    `structure.kept_heads`, tuples). Immutable; equality compares the fields only.
    """

    __slots__ = ("_fields", "config")

    def __init__(self, fields: Fields, config: PretrainedConfig):
        object.__setattr__(self, "_fields", dict(fields))
        object.__setattr__(self, "config", config)

    def __getattr__(self, name: str):
        fields = object.__getattribute__(self, "_fields")
        if name in fields:
            return fields[name]
        raise AttributeError(f"Structure has no field {name!r}: its fields are {list(fields)}.")

    def __setattr__(self, name: str, value) -> None:
        raise AttributeError("Structure is immutable: make a new one with Structure.from_dict().")

    def __eq__(self, other) -> bool:
        return isinstance(other, Structure) and self._fields == other._fields

    def __hash__(self) -> int:
        return hash(tuple(self._fields.items()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self._fields.items())
        return f"Structure({fields})"

    def __reduce__(self):
        return (Structure, (self._fields, self.config))

    @classmethod
    def full(cls, config: PretrainedConfig) -> Structure:
        """The unpruned architecture of `config`."""
        fields: Fields = {}
        for kind in UNIT_KINDS.values():
            fields.update(kind.full(config))
        return cls(fields, config)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | Structure, config: PretrainedConfig) -> Structure:
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
        required, optional = _keys()
        missing = [key for key in required if key not in data]
        if missing:
            raise ValueError(f"structure lacks {missing}: expected keys {required}.")
        unknown = sorted(set(data) - set(required) - set(optional))
        if unknown:
            raise ValueError(
                f"structure has unknown keys {unknown}: expected {required} and optionally "
                f"{optional}."
            )
        fields: Fields = {}
        for kind in UNIT_KINDS.values():
            fields.update(kind.validate(data, config))
        check_blocks(fields)
        return cls(fields, config)

    def to_dict(self) -> dict[str, list]:
        """Plain lists and ints (for hparams, YAML, JSON); block keys only if a block is removed."""
        data: dict[str, list] = {}
        for kind in UNIT_KINDS.values():
            data.update(kind.as_dict(self))
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
        """Exact number of front-end parameters of this structure (see `cost`)."""
        return int(total_params(self.config, self.sizes()))

    def macs(self, num_samples: int) -> int:
        """Exact front-end multiply-accumulates for one waveform of `num_samples` samples."""
        return int(total_macs(self.config, self.sizes(), conv_frames(self.config, num_samples)))

    def cost(self, metric: str = "params", num_samples: int | None = None) -> int:
        """`params()` or `macs(num_samples)`."""
        check_metric(metric, num_samples)
        return self.params() if metric == "params" else self.macs(num_samples)

    def sparsity(self, metric: str = "params", num_samples: int | None = None) -> float:
        """1 - cost(self) / cost(unpruned `config`), cost being "params" or "macs"."""
        full = Structure.full(self.config)
        return 1.0 - self.cost(metric, num_samples) / full.cost(metric, num_samples)

    def panels(self) -> list[Panel]:
        """Bar charts of what the structure keeps: (title, kept, of) per layer, per unit kind."""
        panels = [kind.panel(self) for kind in UNIT_KINDS.values()]
        return [panel for panel in panels if panel is not None]

    def summary(self, num_samples: int | None = None) -> str:
        """A few lines for a person: parameters (and MACs) kept, and the kept units

        num_samples: length of one chunk, to count MACs too (none without it).
        """
        full = Structure.full(self.config)
        label = architecture_of(self.config).label
        lines = [f"{label} parameters: {self.params():,} of {full.params():,} "
                 f"(sparsity {self.sparsity('params'):.4f})"]
        if num_samples is not None:
            lines.append(f"{label} MACs per chunk of {num_samples:,} samples: "
                         f"{self.macs(num_samples):,} of {full.macs(num_samples):,} "
                         f"(sparsity {self.sparsity('macs', num_samples):.4f})")
        for kind in UNIT_KINDS.values():
            lines.extend(kind.summary(self))
        return "\n".join(lines)


METRICS = ("params", "macs")


def check_metric(metric: str, num_samples: int | None) -> None:
    """Raise if `metric` is not a cost metric, or "macs" comes without a positive length."""
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r}: expected one of {METRICS}.")
    if metric == "macs" and (num_samples is None or num_samples < 1):
        raise ValueError(f"num_samples={num_samples!r}: metric='macs' needs a positive length.")
