"""Exact-budget pruning: eval-mode masks adjusted, at the margin, to land on a sparsity.

The gates' eval-mode (deterministic) masks keep round(E||z||_0) units per group, so the
pruned structure lands near the expected sparsity, not on it: whole units move the cost in
steps, and rounding per group adds up. `masks_at_budget` then decides the marginal units from
the gates' own scores (log_alpha), with the exact cost model (`Structure.sparsity`): too
little sparsity, it removes the kept units of lowest score; too much, it restores the closed
units of highest score; a unit whose change would overshoot the tolerance, or empty a CNN
layer, is skipped. Every other unit keeps its deterministic mask.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .cost import MODULES, check_module, module_sparsity
from .gating import deterministic_masks, is_gated, kept_structure
from .structure import check_metric
from .units import EmptyLayerError


@dataclass
class BudgetReport:
    """What `masks_at_budget` changed: units and the sparsity before and after

    With module-wise targets, `target`, `sparsity_before` and `sparsity_after` are dicts
    {module: sparsity}, and `sparsity` (the whole front end's, after) is their combination.
    """

    target: float | dict[str, float]
    metric: str
    sparsity_before: float | dict[str, float]
    sparsity_after: float | dict[str, float]
    removed: int
    restored: int
    sparsity: float | None = None

    @property
    def changed(self) -> int:
        """Units whose mask differs from the deterministic gates'."""
        return self.removed + self.restored


@torch.no_grad()
def masks_at_budget(
    frontend: nn.Module,
    sparsity: float | Mapping[str, float],
    metric: str = "params",
    num_samples: int | None = None,
    tolerance: float = 0.005,
) -> tuple[dict[str, list[torch.Tensor]], BudgetReport]:
    """Eval-mode masks of a gated front end whose pruned structure has `sparsity` (+- tolerance)

    `sparsity`: of the whole front end, or {module: target} (module-wise: each module of
    `cost.MODULES` lands on its own target, deciding the marginal units of its own kinds).
    Returns the masks (as `gating.deterministic_masks` gives them, adjusted at the margin)
    and a report. When no order of marginal units reaches the tolerance (the gated units are
    too coarse, or every one is needed, or the target is beyond what pruning can reach), the
    masks come as close as they get and the report says how close.
    """
    check_metric(metric, num_samples)
    targets = dict(sparsity) if isinstance(sparsity, Mapping) else {None: sparsity}
    for module, target in targets.items():
        if module is not None:
            check_module(module)
        if not 0.0 <= target < 1.0:
            name = "sparsity" if module is None else f"sparsity[{module!r}]"
            raise ValueError(f"{name}={target}: expected a target in [0, 1).")
    if not is_gated(frontend):
        raise ValueError("The front end carries no gates: attach_frontend_gates() first.")
    masks = deterministic_masks(frontend)
    before, after, removed, restored = {}, {}, 0, 0
    for module, target in targets.items():
        units = tuple(frontend.gates) if module is None else MODULES[module]

        def measure(module=module) -> float:
            structure = kept_structure(frontend, masks)
            if module is None:
                return structure.sparsity(metric, num_samples)
            return module_sparsity(structure, module, metric, num_samples)

        before[module], after[module], less, more = _adjust(frontend, masks, units, target,
                                                            measure, tolerance)
        removed, restored = removed + less, restored + more
    if None in targets:
        return masks, BudgetReport(sparsity, metric, before[None], after[None], removed, restored,
                                   after[None])
    overall = kept_structure(frontend, masks).sparsity(metric, num_samples)
    return masks, BudgetReport(dict(targets), metric, before, after, removed, restored, overall)


def _adjust(frontend: nn.Module, masks: dict, units, sparsity: float, measure,
            tolerance: float) -> tuple[float, float, int, int]:
    """Adjust, in place, the masks of `units` at the margin until measure() is within
    `tolerance` of `sparsity`; return the sparsity before and after, units removed, restored."""
    before = current = measure()
    removed = restored = 0
    remove = current < sparsity
    candidates = []
    for unit, group in frontend.gates.items():
        if unit not in units:
            continue
        for layer, gate in enumerate(group):
            soft = torch.sigmoid(gate.log_alpha / gate.beta * 0.8)
            for index in range(gate.num_units):
                if bool(masks[unit][layer][index] > 0) == remove:
                    candidates.append((float(gate.log_alpha[index]), unit, layer, index,
                                       soft[index].clamp(min=torch.finfo(soft.dtype).tiny)))
    # remove the least wanted units first, restore the most wanted first
    candidates.sort(key=lambda candidate: candidate[0], reverse=not remove)
    for _, unit, layer, index, soft in candidates:
        if abs(current - sparsity) <= tolerance:
            break
        mask = masks[unit][layer]
        previous = mask[index].clone()
        mask[index] = 0.0 if remove else soft
        try:
            changed = measure()
        except EmptyLayerError:
            changed = None
        overshoots = changed is None or (changed > sparsity + tolerance if remove
                                         else changed < sparsity - tolerance)
        if overshoots or changed == current:
            mask[index] = previous  # a unit of a removed block changes nothing: leave it be
            continue
        current = changed
        if remove:
            removed += 1
        else:
            restored += 1
    return before, current, removed, restored
