"""Pruning lands on the budget asked for: the projection controller, then exact finalisation."""

import json

import lightning
import pytest
import torch
from helpers import network_depth, rounding_bound, tiny_model
from wavlm_helpers import max_abs_diff, randomise_gates, tiny_frontend

from pyannote_wavlm_prune import prune
from pyannote_wavlm_prune.frontends import (
    WavLMFrontEnd,
    attach_frontend_gates,
    deterministic_masks,
    expected_sparsity,
    fold_frontend,
    kept_structure,
)
from pyannote_wavlm_prune.frontends.budget import masks_at_budget
from pyannote_wavlm_prune.frontends.cost import shift_gates_to_sparsity
from pyannote_wavlm_prune.recipe.callbacks import SparsityTrajectory
from pyannote_wavlm_prune.recipe.training import trainer
from pyannote_wavlm_prune.tasks import DistillPrune

# DistillPrune's defaults (the papers' learning rates, docs/method.md#the-objective, and the
# projection controller); a short warm-up
WARMUP, STEPS = 20, 40


@pytest.fixture(scope="module")
def runs(tiny_protocol, tmp_path_factory):
    """One short DistillPrune run per (target, objective), default controller settings."""
    results = {}
    for sparsity, objective in [(0.3, "params"), (0.5, "params"), (0.7, "params"), (0.5, "macs")]:
        lightning.seed_everything(0)
        directory = tmp_path_factory.mktemp(f"run-{sparsity}-{objective}")
        task = DistillPrune(tiny_protocol, teacher=tiny_model(duration=0.5), sparsity=sparsity,
                            objective=objective, warmup_steps=WARMUP, batch_size=2,
                            validate=False, cache=directory / "cache.npz")
        student = task.student()
        trainer(max_steps=STEPS, progress=False,
                callbacks=[SparsityTrajectory(directory)]).fit(student)
        results[sparsity, objective] = task, student.eval(), directory
    return results


@pytest.mark.parametrize("sparsity, objective", [(0.3, "params"), (0.5, "params"),
                                                 (0.7, "params"), (0.5, "macs")])
def test_the_pruned_structure_ends_within_3_points_of_the_target(runs, sparsity, objective):
    task, student, _ = runs[sparsity, objective]
    pruned = prune(student)
    reached = pruned.structure.sparsity(objective, task.num_samples)
    assert abs(reached - sparsity) <= 0.03, reached
    assert reached == pytest.approx(task.pruned_sparsity(), abs=1e-12)


@pytest.mark.parametrize("sparsity, objective", [(0.3, "params"), (0.5, "params"),
                                                 (0.7, "params"), (0.5, "macs")])
def test_exact_finalisation_lands_within_half_a_point_in_the_objective(runs, sparsity, objective):
    task, student, _ = runs[sparsity, objective]
    # the objective and chunk length come from the student (DistillPrune records them)
    pruned = prune(student, sparsity=sparsity)
    reached = pruned.structure.sparsity(objective, task.num_samples)
    assert abs(reached - sparsity) <= 0.005, reached
    report = pruned.budget_report
    assert report.metric == objective and report.sparsity_after == pytest.approx(reached)
    assert report.sparsity_before == pytest.approx(task.pruned_sparsity())


def test_the_projection_puts_the_expected_sparsity_on_the_target_every_step(runs):
    _, _, directory = runs[0.5, "params"]
    points = json.loads((directory / "sparsity.json").read_text())
    assert [p["step"] for p in points] == list(range(STEPS))
    for point in points[1:]:  # step 0: a target of 0 is out of reach, the gates are left
        assert point["expected_params"] == pytest.approx(point["target"], abs=1e-6)
    assert points[-1]["target"] == 0.5
    assert (directory / "sparsity.png").stat().st_size > 10_000


def test_a_shift_sets_the_expected_sparsity_and_keeps_the_order_of_the_gates():
    frontend = tiny_frontend(num_layers=2)
    attach_frontend_gates(frontend, ("conv", "head", "ffn"))
    randomise_gates(frontend)
    before = torch.cat([g.log_alpha.detach().clone() for group in frontend.gates.values()
                        for g in group])
    offset = shift_gates_to_sparsity(frontend, frontend.config, 0.42)
    after = torch.cat([g.log_alpha.detach() for group in frontend.gates.values() for g in group])
    assert float(expected_sparsity(frontend, frontend.config)) == pytest.approx(0.42, abs=1e-6)
    # float32: after - before rounds to the ulp of log_alpha, well within allclose's 1e-5
    assert torch.allclose(after - before, torch.full_like(before, offset))


def test_a_target_out_of_reach_leaves_the_gates_or_closes_them_as_far_as_they_go():
    frontend = tiny_frontend(num_layers=2)
    attach_frontend_gates(frontend, ("ffn",))
    assert shift_gates_to_sparsity(frontend, frontend.config, 0.0) == 0.0
    # FFN units alone cannot remove more than the FFNs
    assert shift_gates_to_sparsity(frontend, frontend.config, 0.99) == -30.0


def _gated_with_soft_gates():
    frontend = tiny_frontend(num_layers=2)
    attach_frontend_gates(frontend, ("conv", "head", "ffn"))
    randomise_gates(frontend)
    return frontend.eval()


@pytest.mark.parametrize("target", [0.2, 0.45])
def test_masks_at_budget_land_on_the_target_changing_units_one_way(target):
    frontend = _gated_with_soft_gates()
    gates = deterministic_masks(frontend)
    masks, report = masks_at_budget(frontend, target)
    reached = kept_structure(frontend, masks).sparsity()
    assert abs(reached - target) <= 0.005
    assert report.sparsity_before == pytest.approx(kept_structure(frontend, gates).sparsity())
    assert report.sparsity_after == pytest.approx(reached)
    differing = {unit: [(gates[unit][layer] > 0) != (masks[unit][layer] > 0)
                        for layer in range(len(masks[unit]))] for unit in masks}
    assert report.changed == sum(int(d.sum()) for group in differing.values() for d in group) > 0
    # all removed (too little sparsity) or all restored (too much), never both
    assert report.removed == 0 or report.restored == 0
    # restored units take their soft eval value, removed ones 0; the others are untouched
    for unit, group in frontend.gates.items():
        for layer, gate in enumerate(group):
            same = ~differing[unit][layer]
            assert torch.equal(masks[unit][layer][same], gates[unit][layer][same])  # copies
            soft = torch.sigmoid(gate.log_alpha / gate.beta * 0.8)
            now_open = differing[unit][layer] & (masks[unit][layer] > 0)
            # the same formula on the same values: exact
            assert torch.equal(masks[unit][layer][now_open], soft[now_open])


def test_the_lowest_scored_units_are_removed_first():
    frontend = _gated_with_soft_gates()
    before = kept_structure(frontend).sparsity()
    masks, report = masks_at_budget(frontend, before + 0.05)
    gates = deterministic_masks(frontend)
    removed = [float(gate.log_alpha[i]) for unit, group in frontend.gates.items()
               for layer, gate in enumerate(group) for i in range(gate.num_units)
               if gates[unit][layer][i] > 0 and masks[unit][layer][i] == 0]
    kept = sorted(float(gate.log_alpha[i]) for unit, group in frontend.gates.items()
                  for layer, gate in enumerate(group) for i in range(gate.num_units)
                  if masks[unit][layer][i] > 0)
    assert report.removed == len(removed) > 0
    # what was removed scores below most of what stays (a unit is skipped only when its
    # removal would overshoot or empty a CNN layer)
    assert sum(score < max(removed) for score in kept) <= report.removed


def test_pruning_by_budget_masks_computes_the_gated_network_under_those_masks():
    # float64, pruning included: the same real arithmetic two ways, equal up to rounding
    frontend = _gated_with_soft_gates().double()
    masks, _ = masks_at_budget(frontend, 0.45)
    state, structure = fold_frontend(frontend, masks)
    pruned = WavLMFrontEnd(frontend.config, structure=structure).double().eval()
    pruned.load_state_dict(state, strict=True)
    # the gated network under the same masks (no draw: the masks are set by hand)
    frontend._gate_masks.current = {(unit, layer): mask for unit, group in masks.items()
                                    if unit in frontend.gates for layer, mask in enumerate(group)}
    frontend._gate_masks.draw = lambda: None
    frontend._gate_masks.drawn_in_training = False
    waveforms = torch.randn(2, 8000, generator=torch.Generator().manual_seed(0)).double()
    with torch.no_grad():
        expected = frontend(waveforms)
        difference = max_abs_diff(expected, pruned(waveforms))
    assert difference <= rounding_bound(expected, network_depth(frontend))
    assert structure.sparsity() == pytest.approx(0.45, abs=0.005)


def test_a_budget_needs_gates_and_a_target_in_zero_one():
    with pytest.raises(ValueError, match="carries no gates"):
        masks_at_budget(tiny_frontend(num_layers=2), 0.5)
    with pytest.raises(ValueError, match=r"sparsity=1.2: expected a target in \[0, 1\)"):
        masks_at_budget(_gated_with_soft_gates(), 1.2)
