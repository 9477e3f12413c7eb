"""Hard-concrete gates (docs/method.md#hard-concrete-gates), and how they attach to a WavLM
front end."""

import copy
import math

import pytest
import torch
from helpers import network_depth, rounding_bound
from wavlm_helpers import LAYOUTS, max_abs_diff, open_all_gates, randomise_gates, tiny_frontend

from pyannote_wavlm_prune.frontends import (
    UNITS,
    HardConcreteGate,
    attach_frontend_gates,
    gate_units,
    is_gated,
    remove_frontend_gates,
)

BETA, LEFT, RIGHT = 2.0 / 3.0, -0.1, 1.1


def test_log_alpha_starts_at_log_odds_of_the_drop_rate_with_std_0_01():
    gate = HardConcreteGate(20000, init_drop_rate=0.01)
    assert gate.log_alpha.shape == (20000,)
    assert gate.log_alpha.mean().item() == pytest.approx(math.log(99.0), abs=1e-3)
    assert gate.log_alpha.std().item() == pytest.approx(0.01, rel=0.05)


def test_expected_l0_is_the_sum_of_open_probabilities():
    gate = HardConcreteGate(3)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-1.0, 0.0, 2.0]))
    shift = BETA * math.log(-LEFT / RIGHT)
    expected = sum(1.0 / (1.0 + math.exp(-(a - shift))) for a in (-1.0, 0.0, 2.0))
    assert gate.expected_l0().item() == pytest.approx(expected, abs=1e-6)


def test_expected_l0_is_differentiable_in_log_alpha():
    gate = HardConcreteGate(4)
    gate.expected_l0().backward()
    p = gate.open_probability().detach()
    assert torch.allclose(gate.log_alpha.grad, p * (1 - p))


def test_train_mode_draws_a_fresh_mask_in_0_1_at_each_call():
    gate = HardConcreteGate(1000, init_drop_rate=0.5).train()
    first, second = gate(), gate()
    assert first.shape == (1000,)
    assert not torch.equal(first, second)
    assert first.min().item() >= 0.0 and first.max().item() <= 1.0
    # the stretched distribution puts mass on exact 0 and exact 1
    assert (first == 0).any() and (first == 1).any()


def test_fraction_of_open_samples_matches_expected_l0():
    gate = HardConcreteGate(50000).train()
    with torch.no_grad():
        gate.log_alpha.fill_(0.3)
    sample = gate()
    open_fraction = (sample > 0).float().mean().item()
    assert open_fraction == pytest.approx(gate.expected_l0().item() / 50000, abs=0.01)


def test_samples_are_differentiable_in_log_alpha():
    gate = HardConcreteGate(100, init_drop_rate=0.5).train()
    gate().sum().backward()
    assert gate.log_alpha.grad.abs().sum().item() > 0


def test_eval_mask_keeps_round_expected_l0_units_with_their_soft_value():
    gate = HardConcreteGate(6).eval()
    log_alpha = torch.tensor([3.0, -4.0, 1.0, -3.0, 0.5, -6.0])
    with torch.no_grad():
        gate.log_alpha.copy_(log_alpha)
    num_kept = round(gate.expected_l0().item())
    assert num_kept == 3
    soft = torch.sigmoid(log_alpha / BETA * 0.8)
    expected = torch.tensor([soft[0], 0.0, soft[2], 0.0, soft[4], 0.0])
    assert torch.allclose(gate(), expected)
    assert torch.equal(gate(), gate())


def test_eval_mask_is_all_zero_when_expected_l0_rounds_to_zero():
    gate = HardConcreteGate(5).eval()
    with torch.no_grad():
        gate.log_alpha.fill_(-10.0)
    assert torch.equal(gate(), torch.zeros(5))


@pytest.mark.parametrize("arguments, message", [
    ({"num_units": -1}, r"num_units=-1: expected a number of units >= 0"),
    ({"num_units": 3, "init_drop_rate": 1.0}, r"init_drop_rate=1.0: expected a probability"),
    ({"num_units": 3, "left": 0.1}, r"\(left, right\)=\(0.1, 1.1\): expected left < 0"),
])
def test_invalid_gate_arguments_raise(arguments, message):
    with pytest.raises(ValueError, match=message):
        HardConcreteGate(**arguments)


# --- gates on a front end -------------------------------------------------------------------


def test_gates_are_parameters_and_state_of_the_front_end():
    frontend = tiny_frontend(num_layers=2)
    attach_frontend_gates(frontend, UNITS)
    assert is_gated(frontend) and gate_units(frontend) == UNITS
    names = {name for name, _ in frontend.named_parameters() if name.startswith("gates.")}
    assert names == {f"gates.conv.{i}.log_alpha" for i in range(7)} | {
        f"gates.{unit}.{j}.log_alpha"
        for unit in ("head", "ffn", "attention_layer", "ffn_layer") for j in range(2)
    }
    assert "gates.head.1.log_alpha" in frontend.state_dict()
    assert frontend.gates["conv"][3].num_units == 32
    assert frontend.gates["head"][0].num_units == 4
    assert frontend.gates["ffn"][1].num_units == 64
    assert frontend.gates["attention_layer"][0].num_units == 1


def test_ffn_gates_start_half_open_and_other_gates_almost_open():
    frontend = tiny_frontend(num_layers=2)
    attach_frontend_gates(frontend, UNITS)
    assert frontend.gates["ffn"][0].log_alpha.mean().item() == pytest.approx(0.0, abs=0.01)
    for unit in ("conv", "head", "attention_layer", "ffn_layer"):
        assert frontend.gates[unit][0].log_alpha.mean().item() == pytest.approx(
            math.log(99.0), abs=0.05)


def test_unknown_unit_raises_naming_it_and_the_valid_ones():
    frontend = tiny_frontend(num_layers=2)
    with pytest.raises(ValueError, match=r"\['channels'\].*'conv', 'head', 'ffn'"):
        attach_frontend_gates(frontend, ("conv", "channels"))
    assert not is_gated(frontend)


def test_attaching_twice_raises():
    frontend = tiny_frontend(num_layers=2)
    attach_frontend_gates(frontend)
    with pytest.raises(ValueError, match="already carries gates"):
        attach_frontend_gates(frontend)


# pruned as far as a structure goes: fewer channels, heads and FFN units, a layer without
# heads, a removed FFN block
PRUNED = {"conv_channels": [16] * 6 + [12], "kept_heads": [[], [1, 2]], "ffn_widths": [8, 0],
          "ffn_layers": [True, False]}


def test_gates_on_a_pruned_front_end_have_one_unit_per_kept_unit():
    frontend = tiny_frontend(num_layers=2, structure=PRUNED)
    attach_frontend_gates(frontend, UNITS)
    sizes = {unit: [gate.num_units for gate in group] for unit, group in frontend.gates.items()}
    assert sizes == {"conv": [16] * 6 + [12], "head": [0, 2], "ffn": [8, 0],
                     "attention_layer": [1, 1], "ffn_layer": [1, 0]}


def test_an_empty_gate_group_has_no_unit_and_no_expected_unit():
    gate = HardConcreteGate(0)
    assert gate().shape == gate.eval()().shape == (0,)
    assert gate.expected_l0().item() == 0.0


@pytest.mark.parametrize("family", LAYOUTS)
@pytest.mark.parametrize("pruned_norms", ["original", "kept"])
def test_open_gates_leave_a_pruned_front_end_s_hidden_states_unchanged(family, pruned_norms):
    # float64: "kept" recomputes the norms over the open channels, the same real arithmetic
    frontend = tiny_frontend(family, num_layers=2, structure=PRUNED,
                             pruned_norms=pruned_norms).double()
    waveforms = torch.randn(2, 8000, dtype=torch.float64)
    with torch.no_grad():
        before = frontend(waveforms)
        attach_frontend_gates(frontend, UNITS)
        open_all_gates(frontend)
        after = frontend(waveforms)
    # "original": open gates multiply by exactly 1, so the arithmetic is the same: exact
    bound = 0.0 if pruned_norms == "original" else rounding_bound(before, network_depth(frontend))
    assert max_abs_diff(before, after) <= bound


@pytest.mark.parametrize("family", LAYOUTS)
def test_open_gates_leave_hidden_states_unchanged(family):
    frontend = tiny_frontend(family, num_layers=2)
    waveforms = torch.randn(2, 8000)
    with torch.no_grad():
        before = frontend(waveforms)
        attach_frontend_gates(frontend, UNITS)
        open_all_gates(frontend)
        after = frontend(waveforms)
    assert max_abs_diff(before, after) == 0.0  # open gates multiply by exactly 1: exact


@pytest.mark.parametrize("family, options", [
    ("base", {}),
    ("large", {"structure": PRUNED, "pruned_norms": "original"}),
    ("large", {"structure": PRUNED, "pruned_norms": "kept"}),
], ids=["unpruned", "pruned-original-norms", "pruned-kept-norms"])
def test_removing_gates_restores_the_ungated_network(family, options):
    frontend = tiny_frontend(family, num_layers=2, **options)
    waveforms = torch.randn(1, 8000)
    state = copy.deepcopy(frontend.state_dict())
    with torch.no_grad():
        before = frontend(waveforms)
        attach_frontend_gates(frontend, UNITS)
        randomise_gates(frontend)
        gated = frontend(waveforms)
        remove_frontend_gates(frontend)
        after = frontend(waveforms)
    assert max_abs_diff(before, gated) > 1e-2
    assert max_abs_diff(before, after) == 0.0  # the same weights and arithmetic again: exact
    assert not is_gated(frontend)
    assert frontend.state_dict().keys() == state.keys()


def test_each_gate_is_sampled_once_per_forward_pass():
    frontend = tiny_frontend(num_layers=2).train()
    attach_frontend_gates(frontend, UNITS)
    calls = []
    for unit, group in frontend.gates.items():
        for index, gate in enumerate(group):
            gate.register_forward_hook(lambda *_, key=(unit, index): calls.append(key))
    frontend(torch.randn(2, 8000))
    assert len(calls) == 7 + 4 * 2 == len(set(calls))


def test_masks_of_a_forward_pass_are_reused_until_the_next_one():
    # what gradient checkpointing needs: a recomputed submodule sees the same sample
    frontend = tiny_frontend(num_layers=2).train()
    attach_frontend_gates(frontend, ("conv",), init_drop_rates={"conv": 0.5})
    waveforms = torch.randn(1, 8000)
    with torch.no_grad():
        frontend(waveforms)
        first = frontend.extract_features(waveforms)
        again = frontend.extract_features(waveforms)
        frontend(waveforms)
        after = frontend.extract_features(waveforms)
    assert torch.equal(first, again)  # the same masks: the same arithmetic, exact
    assert (first - after).abs().max().item() > 1e-3


def test_masks_are_drawn_in_train_mode_and_deterministic_in_eval_mode():
    frontend = tiny_frontend(num_layers=2)
    attach_frontend_gates(frontend, UNITS)
    randomise_gates(frontend)
    waveforms = torch.randn(1, 8000)
    with torch.no_grad():
        frontend.train()
        assert max_abs_diff(frontend(waveforms), frontend(waveforms)) > 1e-3
        frontend.eval()  # deterministic masks: the same arithmetic twice, exact
        assert max_abs_diff(frontend(waveforms), frontend(waveforms)) == 0.0


def test_every_gate_receives_a_gradient_from_the_hidden_states():
    frontend = tiny_frontend(num_layers=2).train()
    attach_frontend_gates(frontend, UNITS, init_drop_rates={unit: 0.3 for unit in UNITS})
    torch.manual_seed(1)
    sum(h.square().mean() for h in frontend(torch.randn(2, 8000))).backward()
    for unit, group in frontend.gates.items():
        for index, gate in enumerate(group):
            assert gate.log_alpha.grad is not None, (unit, index)
            assert gate.log_alpha.grad.abs().sum().item() > 0, (unit, index)


def test_a_deep_copy_of_a_gated_front_end_has_its_own_gates():
    frontend = tiny_frontend(num_layers=2)
    attach_frontend_gates(frontend, UNITS)
    waveforms = torch.randn(1, 8000)
    frontend.train()(waveforms)  # sampled masks (not graph leaves) are held until the next pass
    frontend.eval()
    with torch.no_grad():
        before = frontend(waveforms)
        duplicate = copy.deepcopy(frontend)
        randomise_gates(duplicate)
        assert max_abs_diff(before, frontend(waveforms)) == 0.0
        assert max_abs_diff(before, duplicate(waveforms)) > 1e-2
