"""Simulated-conversation corpora: reference matches audio, overlap as asked, reproducible,
usable as a pyannote protocol, resumable, and strict about bad input."""

import hashlib
import importlib
import os
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest
from pyannote.database.util import load_rttm, load_uem

from pyannote_wavlm_prune.cli import main
from pyannote_wavlm_prune.data import SimulationConfig, Simulator, get_protocol, simulate
from pyannote_wavlm_prune.data.acoustics import impulse_response
from pyannote_wavlm_prune.data.conversation import FRAME, plan_conversation, render_conversation
from pyannote_wavlm_prune.data.simulate import MARKER, SUBSETS
from pyannote_wavlm_prune.data.voices import synthesize

# the package's `simulate` attribute is the function; the module is in sys.modules
SIMULATE_MODULE = importlib.import_module("pyannote_wavlm_prune.data.simulate")
REPOSITORY = Path(__file__).resolve().parents[1]
TINY = SimulationConfig.from_preset("tiny")
QUIET = dict(progress=False)


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def read_wav(path: Path) -> tuple[np.ndarray, int, int, int]:
    with wave.open(str(path), "rb") as w:
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return samples, w.getframerate(), w.getnchannels(), w.getsampwidth()


@pytest.fixture(scope="module")
def tiny_root(tiny_protocol) -> Path:
    """Root of the session's tiny corpus (conftest's `tiny_protocol`, default parameters)."""
    return Path(next(tiny_protocol.train())["audio"]).parents[1]


@pytest.fixture(scope="module")
def tiny_simulator() -> Simulator:
    return Simulator(TINY)


def test_corpus_has_16khz_mono_16bit_audio_and_one_list_rttm_uem_per_subset(tiny_root):
    for subset, count in zip(SUBSETS, TINY.conversations, strict=True):
        uris = (tiny_root / "lists" / f"{subset}.txt").read_text().split()
        assert uris == [TINY.uri(subset, i) for i in range(count)]
        uem = load_uem(tiny_root / "uem" / f"{subset}.uem")
        assert set(load_rttm(tiny_root / "rttm" / f"{subset}.rttm")) == set(uris)
        for uri in uris:
            samples, sample_rate, channels, width = read_wav(tiny_root / "audio" / f"{uri}.wav")
            assert (sample_rate, channels, width) == (16000, 1, 2)
            assert 12.0 <= len(samples) / 16000 <= 20.0 * 1.25 + 2.0
            assert uem[uri].extent().end == pytest.approx(len(samples) / 16000, abs=1e-3)


def test_rttm_agrees_with_speaker_tracks_on_98_percent_of_frames(tiny_root, tiny_simulator):
    # a speaker is active in a 10 ms frame of their own (dry) track when its energy
    # is within 40 dB of the track's loudest frame
    agreements = []
    for subset in SUBSETS:
        references = load_rttm(tiny_root / "rttm" / f"{subset}.rttm")
        for index, conversation in enumerate(tiny_simulator.conversations(subset)):
            rendering = tiny_simulator.render(subset, index, conversation)
            written, *_ = read_wav(tiny_root / "audio" / f"{conversation.uri}.wav")
            np.testing.assert_array_equal(written, rendering.waveform)

            reference = references[conversation.uri]
            assert sorted(reference.labels()) == sorted(rendering.tracks)
            num_frames = len(written) // FRAME
            for speaker, track in rendering.tracks.items():
                energy = np.mean(track[: num_frames * FRAME].reshape(num_frames, FRAME) ** 2, 1)
                active = energy > energy.max() * 1e-4
                annotated = np.zeros(num_frames, dtype=bool)
                for segment in reference.label_timeline(speaker):
                    annotated[round(segment.start * 100) : round(segment.end * 100)] = True
                agreements.append(np.mean(active == annotated))
    assert len(agreements) >= 20
    assert min(agreements) >= 0.98


def test_realised_overlap_ratio_is_within_005_of_request(tiny_root):
    for subset in SUBSETS:
        for uri, annotation in load_rttm(tiny_root / "rttm" / f"{subset}.rttm").items():
            speech = annotation.get_timeline().support().duration()
            overlap = annotation.get_overlap().duration()
            assert overlap / speech == pytest.approx(TINY.overlap, abs=0.05), uri


@pytest.mark.parametrize("overlap", [0.0, 0.1, 0.35, 0.5])
@pytest.mark.parametrize("num_speakers", [2, 3])
def test_planner_reaches_any_overlap_ratio_up_to_half(tiny_simulator, overlap, num_speakers):
    speakers = tiny_simulator.pools["train"][:num_speakers]
    banks = {speaker: tiny_simulator.banks[speaker] for speaker in speakers}
    for seed in range(8):
        conversation = plan_conversation(
            "x", np.random.default_rng(seed), banks, 12.0, overlap, pause=(0.1, 1.0)
        )
        assert conversation.overlap_ratio == pytest.approx(overlap, abs=0.05)
        assert sorted(conversation.speakers) == sorted(speakers)


def test_speakers_are_disjoint_across_subsets(tiny_root):
    labels = {
        subset: {
            label
            for annotation in load_rttm(tiny_root / "rttm" / f"{subset}.rttm").values()
            for label in annotation.labels()
        }
        for subset in SUBSETS
    }
    assert not labels["train"] & labels["development"]
    assert not labels["train"] & labels["test"]
    assert not labels["development"] & labels["test"]
    assert len(labels["train"]) >= 3


def test_same_seed_gives_byte_identical_files(tmp_path, tiny_root):
    simulate(tmp_path / "again", preset="tiny", seed=TINY.seed, **QUIET)
    hashes = file_hashes(tmp_path / "again")
    assert len(hashes) == sum(TINY.conversations) + 3 * 3 + 2  # audio, lists/rttm/uem, yml, marker
    assert hashes == file_hashes(tiny_root)


def test_different_seed_gives_different_audio(tmp_path, tiny_root):
    simulate(tmp_path / "other", preset="tiny", seed=1, conversations=(2, 1, 1), **QUIET)
    other = file_hashes(tmp_path / "other")
    audio = [name for name in other if name.startswith("audio/")]
    assert len(audio) == 4
    assert all(other[name] != file_hashes(tiny_root)[name] for name in audio)


def test_espeak_ng_synthesis_is_deterministic():
    first = synthesize("en-gb_f3_p55_s155", "Could you say that again, please?")
    np.testing.assert_array_equal(
        first, synthesize("en-gb_f3_p55_s155", "Could you say that again, please?")
    )
    assert 1.0 < len(first) / 16000 < 4.0


def test_protocol_loads_with_audio_annotation_and_annotated(tiny_protocol):
    counts = {}
    for subset in SUBSETS:
        files = list(getattr(tiny_protocol, subset)())
        counts[subset] = len(files)
        for file in files:
            assert Path(file["audio"]).is_file()
            assert file["scope"] == "database"
            assert file["annotated"].extent().end > file["annotation"].get_timeline().extent().end
    assert tiny_protocol.name == "Simulated.SpeakerDiarization.tiny"
    assert tuple(counts.values()) == TINY.conversations


def test_pyannote_speaker_diarization_task_prepares_the_protocol(
    tiny_protocol, tiny_root, tmp_path
):
    from pyannote.audio.tasks import SpeakerDiarization

    task = SpeakerDiarization(tiny_protocol, duration=2.0, cache=tmp_path / "cache.npz")
    task.prepare_data()
    task.setup()
    # train and development files (the task reads their audio through torchcodec)
    durations, segments = [], 0
    for subset in ("train", "development"):
        durations += [t.extent().end for t in load_uem(tiny_root / f"uem/{subset}.uem").values()]
        segments += len((tiny_root / f"rttm/{subset}.rttm").read_text().splitlines())
    assert task.prepared_data["audio-annotated"].tolist() == pytest.approx(durations)
    assert len(task.prepared_data["annotations-segments"]) == segments
    assert task.specifications.classes == ["speaker#1", "speaker#2", "speaker#3"]


def test_repository_database_yml_resolves_paths_relative_to_itself(tmp_path, tiny_root):
    # the repository's yml, moved along with a data/simulated/tiny corpus next to it
    (tmp_path / "data" / "simulated").mkdir(parents=True)
    os.symlink(tiny_root, tmp_path / "data" / "simulated" / "tiny")
    shutil.copy(REPOSITORY / "database.yml", tmp_path / "database.yml")
    protocol = get_protocol(tmp_path / "database.yml", "tiny")
    audio = [Path(file["audio"]) for file in protocol.test()]
    assert [path.parent for path in audio] == [tmp_path / "data/simulated/tiny/audio"] * 2
    quickstart = get_protocol(tmp_path / "database.yml", "Simulated.SpeakerDiarization.quickstart")
    assert quickstart.name == "Simulated.SpeakerDiarization.quickstart"


def test_building_again_with_same_parameters_does_nothing(tiny_root, monkeypatch):
    times = {path: path.stat().st_mtime_ns for path in tiny_root.rglob("*")}

    def fail(*args, **kwargs):
        raise AssertionError("a complete corpus was simulated again")

    monkeypatch.setattr(SIMULATE_MODULE, "Simulator", fail)
    assert simulate(tiny_root, preset="tiny", **QUIET) == tiny_root / "database.yml"
    assert times == {path: path.stat().st_mtime_ns for path in tiny_root.rglob("*")}


def test_building_again_with_other_parameters_raises_naming_them(tiny_root):
    with pytest.raises(FileExistsError, match="overlap: 0.2 there, 0.3 asked"):
        simulate(tiny_root, preset="tiny", overlap=0.3, **QUIET)


def test_interrupted_build_resumes_to_identical_files(tmp_path, tiny_root, monkeypatch):
    written = []
    write_wav = SIMULATE_MODULE._write_wav

    def crash_after_three(path, waveform):
        if len(written) == 3:
            raise KeyboardInterrupt
        written.append(path)
        write_wav(path, waveform)

    monkeypatch.setattr(SIMULATE_MODULE, "_write_wav", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        simulate(tmp_path / "resumed", preset="tiny", **QUIET)
    assert '"status": "building"' in (tmp_path / "resumed" / MARKER).read_text()
    assert not list((tmp_path / "resumed").rglob("*.tmp"))

    monkeypatch.setattr(SIMULATE_MODULE, "_write_wav", write_wav)
    simulate(tmp_path / "resumed", preset="tiny", **QUIET)
    assert file_hashes(tmp_path / "resumed") == file_hashes(tiny_root)


def test_noise_is_added_at_the_requested_snr_and_leaves_the_reference_alone(tiny_simulator):
    conversation = tiny_simulator.conversation("train", 0)
    rendering = render_conversation(
        conversation,
        tiny_simulator.banks,
        np.random.default_rng(0),
        np.random.default_rng(1),
        noise_snr=(10.0, 10.0),
    )
    speech = np.sum(list(rendering.tracks.values()), axis=0)
    noise = rendering.waveform / 32767.0 - speech
    active = np.repeat(np.any(list(conversation.activity.values()), axis=0), FRAME)
    snr = 10 * np.log10(np.mean(speech[active] ** 2) / np.mean(noise**2))
    assert snr == pytest.approx(10.0, abs=0.1)


def test_impulse_response_has_requested_direct_to_reverberant_ratio_and_decay():
    response = impulse_response(np.random.default_rng(0), rt60=0.4, direct_to_reverberant=6.0)
    assert len(response) == 0.4 * 16000
    assert 10 * np.log10(response[0] ** 2 / np.sum(response[1:] ** 2)) == pytest.approx(6.0)
    head, tail = np.mean(response[1:801] ** 2), np.mean(response[-800:] ** 2)
    # windows centred 25 ms and 375 ms in: 60 dB per 0.4 s makes 52.5 dB
    assert 10 * np.log10(head / tail) == pytest.approx(52.5, abs=2.0)


def test_folder_source_gives_speakers_and_disjoint_subsets(tmp_path):
    folder = tmp_path / "speakers"
    for n, speaker in enumerate(["ann", "bob", "cid", "dee", "eve", "fay"]):
        (folder / speaker).mkdir(parents=True)
        for k, text in enumerate(["Good morning to you.", "See you later, then."]):
            waveform = synthesize(f"en-us_m{n + 1}_p50_s160", text)
            with wave.open(str(folder / speaker / f"{k}.wav"), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(16000)
                w.writeframes((waveform * 32767).astype("<i2").tobytes())
    database_yml = simulate(
        tmp_path / "corpus",
        source=folder,
        num_speakers=2,
        speakers_per_subset=(2, 2, 2),
        conversations=(2, 1, 1),
        duration=(6.0, 8.0),
        **QUIET,
    )
    protocol = get_protocol(database_yml)
    labels = {
        s: {x for f in getattr(protocol, s)() for x in f["annotation"].labels()} for s in SUBSETS
    }
    assert set().union(*labels.values()) <= {"ann", "bob", "cid", "dee", "eve", "fay"}
    assert [len(labels[s]) for s in SUBSETS] == [2, 2, 2]


def test_command_line_finds_the_complete_corpus(tiny_root, capsys):
    assert main(["simulate", str(tiny_root), "--preset", "tiny", "--quiet"]) == 0
    assert capsys.readouterr().out.split() == [
        str(tiny_root / "database.yml"),
        "Simulated.SpeakerDiarization.tiny",
    ]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(overlap=1.0), "overlap must be in \\[0, 1\\), got 1.0"),
        (dict(overlap=-0.1), "overlap must be in \\[0, 1\\), got -0.1"),
        (dict(num_speakers=1), "num_speakers must be at least 2 per conversation, got 1"),
        (dict(num_speakers=(1, 3)), "num_speakers must be at least 2 per conversation, got 1"),
        (dict(preset="huge"), "unknown preset 'huge'"),
        (
            dict(num_speakers=9),
            "speakers_per_subset gives train 8 speakers, fewer than num_speakers=9",
        ),
        (dict(noise_snr=(20, 5)), "noise_snr must be a \\(min, max\\) range"),
        (dict(sped=1.0), "unknown simulation parameter\\(s\\) \\['sped'\\]"),
    ],
)
def test_bad_parameter_raises_value_error_naming_it(tmp_path, arguments, message):
    with pytest.raises(ValueError, match=message):
        simulate(tmp_path / "corpus", **arguments, **QUIET)
    assert not (tmp_path / "corpus").exists()


def test_empty_source_folder_raises_value_error_naming_it(tmp_path):
    (tmp_path / "empty" / "nobody").mkdir(parents=True)
    with pytest.raises(ValueError, match="source folder '.*empty' is empty"):
        simulate(tmp_path / "corpus", source=tmp_path / "empty", **QUIET)
    assert not (tmp_path / "corpus").exists()


def test_command_line_reports_bad_overlap(capsys):
    assert main(["simulate", "unused", "--overlap", "1.5", "--quiet"]) == 2
    assert capsys.readouterr().err == ("pyannote-wavlm-prune simulate: error: argument --overlap: "
                                       "expected a ratio in [0, 1), got '1.5'\n")


def test_command_line_reports_a_bad_simulation_parameter_in_one_line(capsys):
    # refused by the simulator (not by the option's type): a range whose bounds are reversed
    assert main(["simulate", "unused", "--speakers", "3-2", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("pyannote-wavlm-prune simulate: error: ") and error.count("\n") == 1
