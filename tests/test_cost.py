"""Cost model (docs/method.md#the-cost-model): expected parameters and MACs, exact where nothing
is random."""

import pytest
import torch
from wavlm_helpers import (
    LAYOUTS,
    NUM_SAMPLES,
    count_parameters,
    flop_counter_macs,
    heavily_pruned_frontend,
    open_all_gates,
    prune_frontend,
    randomise_gates,
    tiny_frontend,
)

from pyannote_wavlm_prune.frontends import (
    REFERENCE_BASE_PLUS_S80,
    UNITS,
    WavLMFrontEnd,
    attach_frontend_gates,
    expected_macs,
    expected_params,
    expected_sparsity,
    kept_structure,
)
from pyannote_wavlm_prune.frontends.presets import base_plus_config, tiny_config
from pyannote_wavlm_prune.frontends.structure import Structure

EIGHT_SECONDS = 8 * 16000


@pytest.mark.parametrize("family", LAYOUTS)
def test_ungated_front_end_cost_is_its_exact_parameter_count(family):
    frontend = tiny_frontend(family)
    large, wavlm = family.endswith("large"), "-" not in family
    # Large: CNN biases and norms (7 x 32 + 8 x 32 + ...); not WavLM: no position table
    # (320 buckets x 4 heads) nor, per layer, 4 gate constants and the gate projection 8 x 8 + 8;
    # HuBERT Base (tiny): no feature-projection norm (2 x 32)
    expected = (57856 + 544 * large - (320 * 4 + 4 * (4 + 8 * 8 + 8)) * (not wavlm)
                - 2 * 32 * (family == "hubert-base"))
    assert expected_params(frontend) == count_parameters(frontend) == expected


@pytest.mark.parametrize("family", LAYOUTS)
def test_expected_params_with_every_gate_open_equal_the_ungated_count_to_the_unit(family):
    frontend = tiny_frontend(family)
    ungated = count_parameters(frontend)
    attach_frontend_gates(frontend, UNITS)
    open_all_gates(frontend)
    expected = expected_params(frontend)
    assert expected.dtype == torch.float64
    assert expected.item() == ungated


@pytest.mark.parametrize("family", LAYOUTS)
def test_macs_equal_flop_counter_on_the_same_input(family):
    frontend = tiny_frontend(family)
    waveform = torch.randn(1, NUM_SAMPLES)
    counted = flop_counter_macs(frontend, waveform)
    # not WavLM: no gate projection, 8 MACs per frame, head dimension, head and layer
    # (64 frames, d = 8, 4 heads, 4 layers)
    expected = 17_241_408 - 8 * 64 * 8 * 4 * 4 * ("-" in family)
    assert expected_macs(frontend, NUM_SAMPLES) == counted == expected
    attach_frontend_gates(frontend, UNITS)
    open_all_gates(frontend)
    # gates add elementwise products only, which neither counts
    assert flop_counter_macs(frontend, waveform) == counted
    assert expected_macs(frontend, NUM_SAMPLES).item() == counted


def test_expected_costs_are_differentiable_in_every_gate():
    frontend = tiny_frontend()
    attach_frontend_gates(frontend, UNITS)
    randomise_gates(frontend)
    (expected_params(frontend) + expected_macs(frontend, NUM_SAMPLES)).backward()
    for unit, group in frontend.gates.items():
        for index, gate in enumerate(group):
            # more open units, more cost
            assert (gate.log_alpha.grad >= 0).all(), (unit, index)
            assert gate.log_alpha.grad.sum().item() > 0, (unit, index)


def test_closing_a_whole_layer_removes_its_expected_cost():
    frontend = tiny_frontend(num_layers=2)
    attach_frontend_gates(frontend, ("attention_layer", "ffn_layer"))
    open_all_gates(frontend)
    full = expected_params(frontend).item()
    with torch.no_grad():
        frontend.gates["attention_layer"][1].log_alpha.fill_(-100.0)
        frontend.gates["ffn_layer"][1].log_alpha.fill_(-100.0)
    # E = 32, d = 8, 4 heads, F = 64: q/k/v/out + const + gate projection; FFN
    attention = 4 * 32 * 32 + 4 * 32 + 4 + 8 * 8 + 8
    feed_forward = 2 * 32 * 64 + 64 + 32
    assert full - expected_params(frontend).item() == pytest.approx(attention + feed_forward)


@pytest.mark.parametrize("family", LAYOUTS)
def test_pruned_front_end_costs_equal_the_cost_model_of_the_deterministic_masks(family):
    gated = heavily_pruned_frontend(family)
    structure = kept_structure(gated).to_dict()
    pruned, pruned_structure = prune_frontend(gated)
    assert pruned_structure == structure
    config = gated.config
    parameters = Structure.from_dict(structure, config).params()
    macs = Structure.from_dict(structure, config).macs(NUM_SAMPLES)
    assert count_parameters(pruned) == expected_params(pruned) == parameters
    assert flop_counter_macs(pruned, torch.randn(1, NUM_SAMPLES)) == macs
    assert expected_macs(pruned, NUM_SAMPLES) == macs
    assert parameters < 0.75 * count_parameters(gated)


def test_unpruned_base_plus_has_94_4_m_parameters_and_58_5_gmacs_per_8_s():
    config = base_plus_config()
    assert Structure.full(config).params() == 94_381_168
    assert Structure.full(config).macs(EIGHT_SECONDS) / 1e9 == pytest.approx(58.5, rel=0.01)
    assert Structure.full(config).macs(16000) / 1e9 == pytest.approx(6.91, rel=0.01)


def test_reference_base_plus_s80_has_18_9_m_parameters_and_9_66_gmacs_per_8_s():
    config = base_plus_config()
    frontend = WavLMFrontEnd(config, structure=REFERENCE_BASE_PLUS_S80)
    parameters = count_parameters(frontend)
    assert parameters == expected_params(frontend) == REFERENCE_BASE_PLUS_S80.params()
    assert parameters / 1e6 == pytest.approx(18.9, rel=0.005)
    macs = expected_macs(frontend, EIGHT_SECONDS)
    assert macs / 1e9 == pytest.approx(9.66, rel=0.02)
    assert expected_sparsity(frontend, config) == pytest.approx(0.8, abs=0.005)


def test_sparsity_is_one_minus_the_cost_ratio_to_the_teacher():
    config = tiny_config(num_hidden_layers=2)
    teacher = WavLMFrontEnd(config)
    structure = {"conv_channels": [16] * 7, "kept_heads": [[0], []], "ffn_widths": [8, 0]}
    student = WavLMFrontEnd(config, structure=structure)
    ratio = count_parameters(student) / count_parameters(teacher)
    assert expected_sparsity(student, teacher) == pytest.approx(1.0 - ratio, abs=1e-12)
    assert expected_sparsity(student, config) == expected_sparsity(student, teacher)
    mac_ratio = Structure.from_dict(structure, config).macs(16000) / Structure.full(config).macs(16000)
    assert expected_sparsity(student, config, "macs", 16000) == pytest.approx(1.0 - mac_ratio)


def test_expected_sparsity_of_a_gated_front_end_is_a_differentiable_tensor():
    frontend = tiny_frontend(num_layers=2)
    attach_frontend_gates(frontend, UNITS)
    open_all_gates(frontend)
    sparsity = expected_sparsity(frontend, frontend.config, "macs", NUM_SAMPLES)
    assert isinstance(sparsity, torch.Tensor) and sparsity.requires_grad
    assert sparsity.item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("arguments, message", [
    ({"metric": "latency"}, r"metric='latency': expected one of \('params', 'macs'\)"),
    ({"metric": "macs"}, r"num_samples=None: metric='macs' needs a positive length"),
    ({"metric": "macs", "num_samples": 0}, r"num_samples=0: metric='macs' needs a positive"),
])
def test_sparsity_options_are_checked(arguments, message):
    frontend = tiny_frontend(num_layers=2)
    with pytest.raises(ValueError, match=message):
        expected_sparsity(frontend, frontend.config, **arguments)


def test_full_structure_costs_the_same_as_the_stock_front_end():
    config = tiny_config("large", num_hidden_layers=2)
    stock = WavLMFrontEnd(config)
    structured = WavLMFrontEnd(config, structure=Structure.full(config).to_dict())
    assert count_parameters(structured) == count_parameters(stock) == expected_params(structured)
    assert expected_macs(structured, NUM_SAMPLES) == expected_macs(stock, NUM_SAMPLES)


def test_a_hubert_with_a_batch_norm_positional_convolution_is_counted_exactly():
    # conv_pos_batch_norm (mHuBERT-like configs): a BatchNorm before the positional
    # convolution instead of its weight norm
    from wavlm_helpers import layout_config

    from pyannote_wavlm_prune.frontends import WavLMFrontEnd

    frontend = WavLMFrontEnd(layout_config("hubert-base", conv_pos_batch_norm=True)).eval()
    assert frontend.wavlm.encoder.pos_conv_embed.batch_norm is not None
    assert expected_params(frontend) == count_parameters(frontend)
    waveform = torch.randn(1, NUM_SAMPLES)
    assert expected_macs(frontend, NUM_SAMPLES) == flop_counter_macs(frontend, waveform)
