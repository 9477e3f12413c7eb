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
    `tolerance` of `sparsity`; return the sparsity before and after, units removed, restored

    A pass removes (or restores) units one by one, skipping those that would overshoot. If
    coarse units block it (the smallest step left is larger than the window: a head of a
    small model), the smallest overshoot is taken and finer units are changed back.
    """
    before = current = measure()
    counts = {True: 0, False: 0}  # removed, restored
    saved = None  # masks and counts before the last forced step
    for _ in range(3):
        if abs(current - sparsity) <= tolerance:
            break
        remove = current < sparsity
        current = _pass(frontend, masks, units, sparsity, measure, tolerance, remove, current,
                        counts)
        if saved is not None and abs(current - sparsity) >= abs(saved[0] - sparsity):
            # the forced step and the pass back did not come closer: undo them
            current, counts = saved[0], saved[2]
            for unit, group in saved[1].items():
                for layer, mask in enumerate(group):
                    masks[unit][layer].copy_(mask)
            break
        if abs(current - sparsity) <= tolerance:
            break
        saved = (current, {unit: [mask.clone() for mask in masks[unit]] for unit in units
                           if unit in masks}, dict(counts))
        # blocked: the candidate (one per gate group, its least wanted or most wanted unit)
        # that lands nearest past the target, then a pass back
        best = None
        for candidate in _candidates(frontend, masks, units, remove, per_group=True):
            changed = _try(masks, candidate, remove, measure)
            if changed is not None and (changed > sparsity if remove else changed < sparsity) \
                    and (best is None or abs(changed - sparsity) < abs(best[0] - sparsity)):
                best = (changed, candidate)
        if best is None:
            break
        _apply(masks, best[1], remove)
        current = best[0]
        counts[remove] += 1
    return before, current, counts[True], counts[False]


def _candidates(frontend: nn.Module, masks: dict, units, remove: bool, per_group: bool = False):
    """Units that removing (kept ones) or restoring (closed ones) could change, least wanted
    first for removal, most wanted first for restoring; per_group: the first of each group."""
    candidates = []
    for unit, group in frontend.gates.items():
        if unit not in units:
            continue
        for layer, gate in enumerate(group):
            soft = torch.sigmoid(gate.log_alpha / gate.beta * 0.8)
            mine = [(float(gate.log_alpha[index]), unit, layer, index,
                     soft[index].clamp(min=torch.finfo(soft.dtype).tiny))
                    for index in range(gate.num_units)
                    if bool(masks[unit][layer][index] > 0) == remove]
            mine.sort(key=lambda candidate: candidate[0], reverse=not remove)
            candidates.extend(mine[:1] if per_group else mine)
    candidates.sort(key=lambda candidate: candidate[0], reverse=not remove)
    return candidates


def _apply(masks: dict, candidate, remove: bool) -> None:
    _, unit, layer, index, soft = candidate
    masks[unit][layer][index] = 0.0 if remove else soft


def _try(masks: dict, candidate, remove: bool, measure) -> float | None:
    """The sparsity with `candidate` changed (None if pruning could not make it); undone."""
    _, unit, layer, index, _ = candidate
    previous = masks[unit][layer][index].clone()
    _apply(masks, candidate, remove)
    try:
        return measure()
    except EmptyLayerError:
        return None
    finally:
        masks[unit][layer][index] = previous


def _pass(frontend: nn.Module, masks: dict, units, sparsity: float, measure, tolerance: float,
          remove: bool, current: float, counts: dict) -> float:
    """Remove (or restore) units one by one, least (most) wanted first, skipping those that
    would overshoot the window, until within it; return the sparsity reached."""
    for candidate in _candidates(frontend, masks, units, remove):
        if abs(current - sparsity) <= tolerance:
            break
        changed = _try(masks, candidate, remove, measure)
        overshoots = changed is None or (changed > sparsity + tolerance if remove
                                         else changed < sparsity - tolerance)
        if overshoots or changed == current:
            continue  # a unit of a removed block changes nothing: leave it be
        _apply(masks, candidate, remove)
        current = changed
        counts[remove] += 1
    return current
