"""The masks of one front-end forward pass, and the base of every gate hook.

Gates act on stock transformers modules through forward hooks and parametrizations (see
`gating.py`); each unit kind (`units/`) defines its own hooks on top of these bases, so that
`gating.remove_frontend_gates` can find and remove them all.
"""

from __future__ import annotations

import torch
from torch import nn


class GateMasks:
    """The masks of the last forward pass, shared by all gate hooks of one front end

    Masks persist until the next front-end forward pass draws new ones, so that a recomputed
    forward (gradient checkpointing) sees the same sample. A submodule called on its own
    reuses them too, unless the gates changed mode (train / eval) since: then it draws.
    """

    def __init__(self, gates: nn.ModuleDict):
        self.gates = gates
        self.current: dict[tuple[str, int], torch.Tensor] = {}
        self.drawn_in_training: bool | None = None

    def draw(self) -> None:
        self.current = {
            (unit, index): gate() for unit, group in self.gates.items()
            for index, gate in enumerate(group)
        }
        self.drawn_in_training = self.gates.training

    def __getstate__(self) -> dict:
        # copies (deepcopy, pickle) start without masks: sampled ones are not graph leaves
        return {**self.__dict__, "current": {}, "drawn_in_training": None}

    def get(self, unit: str, index: int) -> torch.Tensor:
        """Mask of gate group (unit, index), shape (num_units,)"""
        if self.drawn_in_training != self.gates.training:
            self.draw()
        return self.current[(unit, index)]


class GateHook:
    """Base of every hook the gates register (so that they can be found and removed)."""

    def __init__(self, masks: GateMasks, unit: str = "", index: int = 0):
        self.masks = masks
        self.unit = unit
        self.index = index


class DrawMasks(GateHook):
    """Front-end forward pre-hook: one sample of every gate per forward pass."""

    def __call__(self, module, args):
        self.masks.draw()


class GateParametrization(nn.Module):
    """Base of the parametrizations the gates register (removed with them)."""

    def __init__(self, masks: GateMasks, unit: str, index: int):
        super().__init__()
        self.masks = masks
        self.unit = unit
        self.index = index
