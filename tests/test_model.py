"""WavLMSegmentation as a pyannote model: shapes, frames, checkpoints, optimizers, errors."""

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import TINY_BACKEND, network_depth, powerset_specifications, rounding_bound, tiny_model
from pyannote.audio import Model
from transformers import WavLMModel

from pyannote_wavlm_prune import WavLMSegmentation, save_checkpoint
from pyannote_wavlm_prune.frontends.presets import tiny_config


@pytest.mark.parametrize("num_samples", [16000, 80000, 128000, 160000, 16000 + 1, 48000 + 319, 401])
def test_output_frames_agree_with_num_frames(num_samples):
    model = tiny_model()
    with torch.inference_mode():
        scores = model(torch.randn(2, 1, num_samples))
    assert scores.shape == (2, model.num_frames(num_samples), 7)
    # powerset log-probabilities: 1 + 3 + 3 classes for 3 speakers, 2 per frame (float32:
    # 7 rounded exponentials sum to 1 within a few ulps, under assert_close's default 1e-5)
    torch.testing.assert_close(scores.exp().sum(-1), torch.ones(2, scores.shape[1]))


def test_eight_seconds_make_399_frames_of_25_ms_every_20_ms():
    model = tiny_model()
    assert model.num_frames(128000) == 399
    frames = model.receptive_field
    assert frames.start == 0.0
    assert frames.duration == pytest.approx(0.025)
    assert frames.step == pytest.approx(0.020)


def test_optimizer_gives_wavlm_and_back_end_their_own_learning_rates():
    model = tiny_model(learning_rate={"wavlm": 3e-5})
    optimizer = model.configure_optimizers()
    rates = {group["name"]: group["lr"] for group in optimizer.param_groups}
    assert rates == {"wavlm": 3e-5, "backend": 1e-3}
    wavlm_group = next(g for g in optimizer.param_groups if g["name"] == "wavlm")
    assert sum(p.numel() for p in wavlm_group["params"]) == sum(
        p.numel() for p in model.frontend.parameters()
    )
    assert isinstance(optimizer, torch.optim.AdamW)


def test_frozen_wavlm_is_left_out_of_the_optimizer_and_stays_in_eval_mode():
    model = tiny_model(freeze_wavlm=True).train()
    optimizer = model.configure_optimizers()
    assert [group["name"] for group in optimizer.param_groups] == ["backend"]
    assert not model.frontend.training and model.conformer.training


def test_hparams_hold_the_full_wavlm_config_not_a_path(tmp_path):
    directory = tmp_path / "wavlm"
    WavLMModel(tiny_config()).save_pretrained(directory)
    model = WavLMSegmentation(wavlm=str(directory), **TINY_BACKEND)
    assert isinstance(model.hparams.wavlm, dict)
    assert model.hparams.wavlm["hidden_size"] == 32
    assert model.hparams.wavlm["model_type"] == "wavlm"


def test_pretrained_weights_load_exactly_from_a_local_directory(tmp_path):
    pretrained = WavLMModel(tiny_config("large"))
    pretrained.save_pretrained(tmp_path / "wavlm")
    model = WavLMSegmentation(wavlm=str(tmp_path / "wavlm"), **TINY_BACKEND)
    loaded = model.frontend.wavlm.state_dict()
    for name, tensor in pretrained.state_dict().items():
        if name.startswith("encoder.layer_norm."):
            continue  # pre-LN final norm: unused by the front end, dropped
        assert torch.equal(loaded[name], tensor), name  # copied, not computed


def test_checkpoint_reloads_offline_in_a_fresh_process_without_the_wavlm_directory(tmp_path):
    WavLMModel(tiny_config()).save_pretrained(tmp_path / "wavlm")
    model = WavLMSegmentation(wavlm=str(tmp_path / "wavlm"), **TINY_BACKEND)
    model.specifications = powerset_specifications()
    model.build()
    model.eval()
    save_checkpoint(model, tmp_path / "model.ckpt")
    shutil.rmtree(tmp_path / "wavlm")

    # float64 in both processes, so that rounding cannot hide a real difference
    waveforms = torch.randn(2, 1, 32000, dtype=torch.float64)
    torch.save(waveforms, tmp_path / "waveforms.pt")
    with torch.inference_mode():
        expected = model.double()(waveforms)

    script = textwrap.dedent(
        f"""
        import torch
        from pyannote.audio import Model
        model = Model.from_pretrained({str(tmp_path / "model.ckpt")!r}).eval().double()
        with torch.inference_mode():
            scores = model(torch.load({str(tmp_path / "waveforms.pt")!r}))
        torch.save(scores, {str(tmp_path / "scores.pt")!r})
        print(type(model).__module__, type(model).__name__)
        """
    )
    # the package of this checkout, not whichever one the environment has installed
    env = {"HF_HUB_OFFLINE": "1", "PYANNOTE_METRICS_ENABLED": "0", "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(Path(__file__).parents[1])}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "WavLMSegmentation" in result.stdout
    # another process, maybe another thread count (summation order): equal up to rounding
    difference = (torch.load(tmp_path / "scores.pt") - expected).abs().max().item()
    assert difference <= rounding_bound(expected, network_depth(model))


def test_checkpoint_reloads_with_model_from_pretrained_in_process(tmp_path):
    model = tiny_model("large")
    save_checkpoint(model, tmp_path / "model.ckpt")
    reloaded = Model.from_pretrained(tmp_path / "model.ckpt").eval()
    assert type(reloaded) is WavLMSegmentation
    waveforms = torch.randn(1, 1, 20000)
    with torch.inference_mode():  # same weights, same process, same arithmetic: exact
        assert torch.equal(reloaded(waveforms), model(waveforms))


def test_save_checkpoint_leaves_no_temporary_file_behind(tmp_path):
    save_checkpoint(tiny_model(), tmp_path / "model.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]


def test_sample_rate_other_than_16_khz_is_refused():
    with pytest.raises(ValueError, match="sample_rate=8000: WavLM works at 16000 Hz"):
        WavLMSegmentation(wavlm=tiny_config(), sample_rate=8000)


def test_unknown_model_name_offline_is_refused():
    with pytest.raises(ValueError, match="Could not load 'microsoft/wavlm-nonexistent'"):
        WavLMSegmentation(wavlm="microsoft/wavlm-nonexistent")


def test_config_of_no_supported_family_is_refused():
    from transformers import BertConfig

    with pytest.raises(ValueError, match="BertConfig .*expected a WavLM, HuBERT or wav2vec 2.0"):
        WavLMSegmentation(wavlm=BertConfig())


def test_unknown_learning_rate_key_is_refused():
    with pytest.raises(ValueError, match=r"unknown keys \['cnn'\]"):
        WavLMSegmentation(wavlm=tiny_config(), learning_rate={"cnn": 1e-4})


def test_waveform_shorter_than_one_frame_is_refused():
    with pytest.raises(ValueError, match="399 samples: WavLM needs at least 400"):
        tiny_model()(torch.randn(1, 1, 399))


def test_waveform_of_the_wrong_rank_is_refused():
    with pytest.raises(ValueError, match=r"shape \(16000,\): expected \(batch, 1, samples\)"):
        tiny_model()(torch.randn(16000))


def test_a_variant_is_named_and_numerics_of_no_variant_are_refused_as_a_name():
    from pyannote_wavlm_prune.commands.train import VARIANT_NAMES
    from pyannote_wavlm_prune.frontends.variants import VARIANTS

    assert VARIANT_NAMES == tuple(sorted(VARIANTS))  # the command line's choices, without torch
    model = WavLMSegmentation(wavlm=tiny_config(), variant="diarizen")
    assert model.numerics == {"layer_weighting": "linear", "conv_output_scale": True,
                              "pruned_norms": "kept", "waveform_norm_eps": 1e-5}
    assert model.frontend.conv_output_scale is not None
    with pytest.raises(ValueError, match=r"variant='diarisen': expected one of \['default', "
                                         r"'diarizen'\]"):
        WavLMSegmentation(wavlm=tiny_config(), variant="diarisen")
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['layer_weightin'\]"):
        WavLMSegmentation(wavlm=tiny_config(), layer_weightin="linear")


def test_numerics_of_checkpoints_before_variants_become_their_variant():
    # hyper-parameters as checkpoints held them before variants existed
    diarizen = WavLMSegmentation(wavlm=tiny_config(), layer_weighting="linear",
                                 conv_output_scale=True, pruned_norms="kept",
                                 waveform_norm_eps=1e-5)
    assert diarizen.hparams.variant == "diarizen"
    assert "layer_weighting" not in diarizen.hparams
    # a combination no variant has (e.g. trained with --layer-weighting linear alone) is kept
    mixed = WavLMSegmentation(wavlm=tiny_config(), layer_weighting="linear")
    assert mixed.hparams.variant == {"layer_weighting": "linear", "conv_output_scale": False,
                                     "pruned_norms": "original", "waveform_norm_eps": 1e-7}
    assert torch.equal(mixed.layer_weights, torch.full((3,), 1 / 3))  # raw weights, uniform
    with pytest.raises(ValueError, match="pruned_norms='both': expected one of"):
        WavLMSegmentation(wavlm=tiny_config(), pruned_norms="both")
