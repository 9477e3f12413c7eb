"""Audio as users have it: compressed formats (decoded once), NaN or infinite samples, NaN
weights, and one bad file among others in `evaluate`."""

import json
import shutil

import numpy as np
import pytest
import scipy.io.wavfile
import torch
from helpers import tiny_model
from pyannote.audio.sample import SAMPLE_FILE
from torchcodec.decoders import AudioDecoder
from torchcodec.encoders import AudioEncoder

from pyannote_wavlm_prune import cli, save_checkpoint
from pyannote_wavlm_prune.pipelines import SpeakerDiarization
from pyannote_wavlm_prune.pipelines.audio import NonFiniteAudioError
from pyannote_wavlm_prune.pipelines.embedding_training import untrained_embedding
from pyannote_wavlm_prune.pipelines.speaker_diarization import NonFiniteScoresError

AGGLOMERATIVE = {
    "segmentation": {"min_duration_off": 0.0},
    "clustering": {"method": "centroid", "min_cluster_size": 1, "threshold": 0.7},
}
# 8.3 s of pyannote's two-speaker sample: several chunks, a padded last one
EXCERPT = SAMPLE_FILE["waveform"][:, :132800]


@pytest.fixture(scope="module")
def pipeline():
    torch.manual_seed(0)
    built = SpeakerDiarization(segmentation=tiny_model(duration=2.0), embedding=untrained_embedding(),
                               segmentation_step=0.5, clustering="AgglomerativeClustering")
    return built.instantiate(AGGLOMERATIVE)


def encode(path, waveform=EXCERPT, sample_rate=16000):
    AudioEncoder(waveform, sample_rate=sample_rate).to_file(str(path))
    return path


def decoded(path) -> torch.Tensor:
    return AudioDecoder(str(path)).get_all_samples().data


def write_float_wav(path, waveform: torch.Tensor, sample_rate=16000):
    """A 32-bit float WAV (pcm_f32le), which can hold NaN and infinities."""
    scipy.io.wavfile.write(path, sample_rate, waveform.numpy().T.astype(np.float32))
    return path


@pytest.mark.parametrize("suffix", [".mp3", ".ogg", ".m4a"])
def test_a_compressed_file_gives_the_diarization_of_a_wav_of_its_decoded_samples(
        pipeline, tmp_path, suffix):
    """pyannote's Audio.crop seeks into compressed streams inexactly ("... 30895 samples
    instead of the expected 32000"): the pipeline decodes such a file once. The WAV holds the
    very samples the decoder gives (float32, exact): the outputs are equal, not close."""
    compressed = encode(tmp_path / f"excerpt{suffix}")
    samples = decoded(compressed)
    assert not torch.equal(samples[:, :EXCERPT.shape[1]], EXCERPT)  # lossy, and read whole
    wav = write_float_wav(tmp_path / "decoded.wav", samples)
    ours = pipeline({"uri": "excerpt", "audio": str(compressed)})
    theirs = pipeline({"uri": "excerpt", "audio": str(wav)})
    assert ours.speaker_diarization == theirs.speaker_diarization
    assert len(ours.speaker_diarization) > 0
    # no turn ends after the decoded audio does
    duration = samples.shape[1] / 16000
    assert ours.speaker_diarization.get_timeline().extent().end <= duration
    assert ours.exclusive_speaker_diarization.get_timeline().extent().end <= duration


def test_a_flac_file_gives_the_diarization_of_its_wav(pipeline, tmp_path):
    """FLAC is lossless and seeks exactly: read chunk by chunk, as WAV."""
    flac = encode(tmp_path / "excerpt.flac")
    assert torch.equal(decoded(flac), EXCERPT)
    wav = write_float_wav(tmp_path / "excerpt.wav", EXCERPT)
    assert (pipeline({"uri": "x", "audio": str(flac)}).speaker_diarization
            == pipeline({"uri": "x", "audio": str(wav)}).speaker_diarization)


def test_a_short_compressed_file_has_no_turn_after_its_end(pipeline, tmp_path):
    short = encode(tmp_path / "short.mp3", EXCERPT[:, :52800])  # 3.3 s: a padded second chunk
    duration = decoded(short).shape[1] / 16000
    output = pipeline({"uri": "short", "audio": str(short)})
    assert len(output.speaker_diarization) > 0
    assert output.speaker_diarization.get_timeline().extent().end <= duration


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_samples_are_an_error_naming_the_file(pipeline, tmp_path, bad):
    """pyannote's powerset conversion turns the NaN scores they give into silence: an empty
    diarization, as if nobody spoke."""
    waveform = EXCERPT.clone()
    waveform[0, 40000:40100] = bad
    path = write_float_wav(tmp_path / "broken.wav", waveform)
    with pytest.raises(NonFiniteAudioError,
                       match=rf"Audio {path} \(uri 'broken'\) holds 100 NaN or infinite samples"):
        pipeline({"uri": "broken", "audio": str(path)})
    with pytest.raises(NonFiniteAudioError, match="in-memory waveform .* holds 100 NaN"):
        pipeline({"uri": "broken", "waveform": waveform, "sample_rate": 16000})


def test_a_segmentation_model_with_nan_weights_is_an_error_saying_so(tmp_path):
    model = tiny_model(duration=2.0)
    with torch.no_grad():
        model.classifier.bias[0] = float("nan")
    pipeline = SpeakerDiarization(segmentation=model, embedding=untrained_embedding(),
                                  segmentation_step=0.5).instantiate(AGGLOMERATIVE)
    with pytest.raises(NonFiniteScoresError,
                       match=r"NaN or infinite scores on in-memory waveform \(uri 'x'\), whose "
                             r"samples are finite: 1 of its \d+ weights are NaN"):
        pipeline({"uri": "x", "waveform": EXCERPT, "sample_rate": 16000})


def test_evaluate_scores_the_good_files_and_names_the_bad_one(tiny_corpus, tmp_path, capsys):
    """One file with NaN samples among a protocol's test files: pyannote would give it an
    empty diarization, scored as all speech missed; here it is an error of its own, the
    others are scored, and the exit status says that one failed."""
    corpus = shutil.copytree(tiny_corpus, tmp_path / "corpus")
    uris = (corpus / "lists" / "test.txt").read_text().split()
    assert len(uris) == 2
    bad = corpus / "audio" / f"{uris[0]}.wav"
    rate, samples = scipy.io.wavfile.read(bad)
    samples = samples.astype(np.float32) / 32768
    samples[1000:1010] = np.nan
    scipy.io.wavfile.write(bad, rate, samples)
    checkpoint = save_checkpoint(tiny_model(duration=5.0), tmp_path / "segmentation.ckpt")
    status = cli.main(["evaluate", str(checkpoint), "--protocol", "tiny", "--database", str(corpus),
                       "--segmentation-step", "1.0", "--json", str(tmp_path / "report.json"),
                       "--no-progress"])
    out, err = capsys.readouterr()
    message = (f"Audio {bad} (uri '{uris[0]}') holds 10 NaN or infinite samples (of "
               f"{len(samples)}): expected finite samples.")
    assert status == 1
    assert err.strip().splitlines() == [f"pyannote-wavlm-prune evaluate: error: {uris[0]}: {message}"]
    assert uris[1] in out and "TOTAL" in out and f"failed: {uris[0]}: {message}" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert [file["uri"] for file in report["files"]] == [uris[1]]
    assert report["failed"] == [{"uri": uris[0], "error": message}]
    assert report["total"]["reference"] == report["files"][0]["reference"] > 0


@pytest.mark.parametrize("suffix", [".mp3", ".ogg", ".m4a"])
def test_a_compressed_file_finds_the_speech_its_wav_has_within_the_codec_s_loss(
        pipeline, tmp_path, suffix):
    """The codecs' default bit rates decode the excerpt at 20 dB (MP3, Vorbis) to 44 dB (AAC)
    of signal-to-noise ratio; the tiny random model, whose 124 turns in 8 s sit at its
    decision thresholds everywhere, then finds speech where its WAV has it but for 3.3 %
    (MP3), 4.7 % (Vorbis), 1.9 % (AAC) of detection errors (measured): at most 10 %."""
    from pyannote.metrics.detection import DetectionErrorRate

    wav = write_float_wav(tmp_path / "excerpt.wav", EXCERPT)
    compressed = encode(tmp_path / f"excerpt{suffix}")
    theirs = pipeline({"uri": "x", "audio": str(wav)}).speaker_diarization
    ours = pipeline({"uri": "x", "audio": str(compressed)}).speaker_diarization
    assert DetectionErrorRate()(theirs, ours) < 0.10


# ------------------------------------------ channels without the keyword pyannote 4.1 removed

def test_the_package_names_no_audio_api_that_pyannote_4_1_removed():
    from pathlib import Path

    import pyannote_wavlm_prune

    package = Path(pyannote_wavlm_prune.__file__).parent
    sources = {path: path.read_text() for path in package.rglob("*.py")}
    assert len(sources) > 50
    for removed in ("Audio(mono=", "mono=", "downmix_and_resample"):
        assert [str(path) for path, text in sources.items() if removed in text] == [], removed


def stereo_file(tmp_path, rate: int = 16000):
    """A 2-channel 16-bit WAV of two different tones and its (2, samples) float samples."""
    time = np.arange(rate) / rate
    channels = np.stack([np.sin(2 * np.pi * 220 * time), 0.5 * np.sin(2 * np.pi * 330 * time)])
    pcm = np.round(channels * 16000).astype(np.int16)
    path = tmp_path / "stereo.wav"
    scipy.io.wavfile.write(path, rate, pcm.T)
    return path, torch.from_numpy(pcm.astype(np.float32) / 32768)


def test_read_channels_gives_every_channel_of_a_file_on_disk_or_in_memory(tmp_path):
    from pyannote_wavlm_prune.pipelines.audio import read_channels

    path, samples = stereo_file(tmp_path, rate=8000)
    waveform, rate = read_channels(str(path))
    # 16-bit PCM to float32 is exact (a power-of-two scale)
    assert rate == 8000 and torch.equal(waveform, samples)
    assert read_channels({"waveform": samples, "sample_rate": 8000})[0] is samples


def test_downmixed_audio_averages_the_channels_of_whole_files_and_excerpts(tmp_path):
    from pyannote.core import Segment

    from pyannote_wavlm_prune.pipelines.audio import DownmixedAudio

    path, samples = stereo_file(tmp_path)
    mean = samples.mean(dim=0, keepdim=True)
    waveform, rate = DownmixedAudio(sample_rate=16000)(str(path))
    assert rate == 16000 and torch.equal(waveform, mean)
    excerpt, _ = DownmixedAudio(sample_rate=16000).crop(str(path), Segment(0.25, 0.5))
    assert torch.equal(excerpt, mean[:, 4000:8000])
    # resampled: the mean of the resampled channels, the same linear map as pyannote's
    # resampled mean, equal within float32 rounding of samples below 0.5 in magnitude
    resampled, rate = DownmixedAudio(sample_rate=8000)({"waveform": samples, "sample_rate": 16000})
    import torchaudio

    expected = torchaudio.functional.resample(mean, 16000, 8000)
    assert rate == 8000 and resampled.shape == (1, 8000)
    assert torch.allclose(resampled, expected, rtol=0, atol=1e-6)
