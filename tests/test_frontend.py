"""The WavLM front end: same hidden states as transformers, WavLM's frame arithmetic."""

import pytest
import torch
from helpers import network_depth, rounding_bound
from transformers import WavLMConfig
from wavlm_helpers import LAYOUTS, layout_config

from pyannote_wavlm_prune.frontends.config import resolve_wavlm
from pyannote_wavlm_prune.frontends.frontend import NORMALISATION_EPS, WavLMFrontEnd
from pyannote_wavlm_prune.frontends.presets import base_plus_config, tiny_config


def reference_hidden_states(frontend: WavLMFrontEnd, waveforms: torch.Tensor):
    """hidden_states of the stock transformers model (WavLMModel, HubertModel, Wav2Vec2Model)
    holding the front end's weights."""
    reference = frontend.architecture.model_class(frontend.config).to(waveforms.dtype).eval()
    missing, unexpected = reference.load_state_dict(frontend.wavlm.state_dict(), strict=False)
    # the front end drops the (unused) final layer norm of pre-LN configs
    assert unexpected == []
    assert all(key.startswith("encoder.layer_norm.") for key in missing)
    if frontend.normalize_waveform:
        mean = waveforms.mean(-1, keepdim=True)
        var = waveforms.var(-1, keepdim=True, unbiased=False)
        waveforms = (waveforms - mean) / torch.sqrt(var + NORMALISATION_EPS)
    return reference(waveforms, output_hidden_states=True).hidden_states


@pytest.mark.parametrize("family", LAYOUTS)
def test_hidden_states_equal_those_of_transformers(family):
    # float64: the same real arithmetic computed two ways, equal up to float64 rounding
    frontend = WavLMFrontEnd(layout_config(family, num_hidden_layers=3)).double().eval()
    waveforms = torch.randn(2, 16000 + 1234, dtype=torch.float64)
    with torch.inference_mode():
        ours = frontend(waveforms)
        theirs = reference_hidden_states(frontend, waveforms)
    assert len(ours) == len(theirs) == 4
    bound = rounding_bound(theirs, network_depth(frontend))
    for mine, reference in zip(ours, theirs):
        assert mine.shape == reference.shape == (2, 53, 32)
        assert (mine - reference).abs().max().item() <= bound


def test_large_family_normalises_each_waveform_and_base_does_not():
    assert WavLMFrontEnd(tiny_config("large")).normalize_waveform
    assert not WavLMFrontEnd(tiny_config("base")).normalize_waveform
    frontend = WavLMFrontEnd(tiny_config("large")).double().eval()
    waveform = torch.randn(1, 8000, dtype=torch.float64)
    with torch.inference_mode():
        # scale and offset are normalised away
        first = frontend(waveform)[-1]
        second = frontend(3.0 * waveform + 0.5)[-1]
    # float64: what remains is the eps under the square root, weighing (1 - 1/9) eps / var on
    # the normalised waveform (var = 1): measured 3e-8, under eps times the output (2e-7)
    assert (first - second).abs().max().item() <= NORMALISATION_EPS * first.abs().max().item()


def test_layer_drop_and_time_masking_are_off_whatever_the_config_says():
    config, _ = resolve_wavlm(WavLMConfig(layerdrop=0.3, mask_time_prob=0.5, hidden_size=32,
                                          num_attention_heads=4, num_hidden_layers=2))
    assert config.layerdrop == 0.0 and config.mask_time_prob == 0.0
    frontend = WavLMFrontEnd(tiny_config()).train()
    # no masked_spec_embed means no SpecAugment-style masking is possible
    assert not hasattr(frontend.wavlm, "masked_spec_embed")


def test_cnn_gradient_is_scaled_by_a_tenth():
    torch.manual_seed(0)
    # float64: the CNN's gradients are small enough for float32 cancellation to show
    # no dropout, so that both training-mode passes are identical
    config = tiny_config(attention_dropout=0.0, hidden_dropout=0.0, activation_dropout=0.0)
    scaled = WavLMFrontEnd(config, cnn_gradient_scale=0.1).double().train()
    plain = WavLMFrontEnd(config, cnn_gradient_scale=1.0).double().train()
    plain.load_state_dict(scaled.state_dict())
    waveforms = torch.randn(1, 8000, dtype=torch.float64)
    for frontend in (scaled, plain):
        frontend(waveforms)[-1].sum().backward()
    conv_scaled = scaled.wavlm.feature_extractor.conv_layers[0].conv.weight.grad
    conv_plain = plain.wavlm.feature_extractor.conv_layers[0].conv.weight.grad
    # the same real arithmetic (a tenth of the same gradient), equal up to float64 rounding
    bound = rounding_bound(0.1 * conv_plain, network_depth(plain))
    assert (conv_scaled - 0.1 * conv_plain).abs().max().item() <= bound
    # everything after the CNN is untouched: the same arithmetic, so exactly the same
    projection_scaled = scaled.wavlm.feature_projection.projection.weight.grad
    projection_plain = plain.wavlm.feature_projection.projection.weight.grad
    assert torch.equal(projection_scaled, projection_plain)


@pytest.mark.parametrize(
    "num_samples, num_frames",
    [(399, 0), (400, 1), (719, 1), (720, 2), (16000, 49), (128000, 399), (160000, 499)],
)
def test_num_frames_follows_the_conv_stack(num_samples, num_frames):
    assert WavLMFrontEnd(tiny_config()).num_frames(num_samples) == num_frames


def test_receptive_field_is_25_ms_with_a_20_ms_step():
    frontend = WavLMFrontEnd(tiny_config())
    assert frontend.receptive_field_size(1) == 400
    assert frontend.frame_step() == 320


def test_base_plus_architecture_has_94_38_million_parameters():
    frontend = WavLMFrontEnd(base_plus_config())
    assert sum(p.numel() for p in frontend.parameters()) == 94_381_168


def test_a_config_of_no_supported_family_is_refused():
    from transformers import BertConfig

    with pytest.raises(ValueError, match=r"BertConfig \('bert'\), expected a WavLM, HuBERT or "
                                         r"wav2vec 2.0 config \(model_type 'wavlm', 'hubert', "
                                         r"'wav2vec2'\)"):
        resolve_wavlm(BertConfig())
    with pytest.raises(ValueError, match="'bert' config, expected a WavLM, HuBERT"):
        resolve_wavlm(BertConfig().to_dict())


def test_unknown_model_name_offline_is_refused_with_a_hint():
    with pytest.raises(ValueError, match="Could not load 'nobody/no-such-wavlm'.*HF_HUB_OFFLINE"):
        resolve_wavlm("nobody/no-such-wavlm")
