"""`diarize`: a pipeline directory on files, directories and list files, through the command line:
one RTTM per file equal to the pipeline's own output, bad files reported at the end, resume."""

import hashlib
import json
import os
from pathlib import PurePath

import numpy as np
import pytest
import torch
from helpers import FAST_PIPELINE as FAST
from helpers import TINY_PRUNED_STRUCTURE as PRUNED
from helpers import tiny_model
from pyannote.audio.sample import SAMPLE_FILE
from scipy.io import wavfile

from pyannote_wavlm_prune.cli import main
from pyannote_wavlm_prune.pipelines import export_pipeline, load_pipeline
from pyannote_wavlm_prune.pipelines.audio import DownmixedAudio
from pyannote_wavlm_prune.pipelines.diarize import AudioInput, diarize_files, find_audio

AGGLOMERATIVE = {
    "segmentation": {"min_duration_off": 0.0},
    "clustering": {"method": "centroid", "min_cluster_size": 2, "threshold": 0.7},
}
SUMMARY = "{total} files: {diarized} diarized, {skipped} already done (skipped), {failed} failed"


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    from pyannote_wavlm_prune.pipelines.embedding_training import untrained_embedding

    return export_pipeline(tmp_path_factory.mktemp("diarize") / "pipeline",
                           tiny_model(duration=5.0, structure=PRUNED),
                           untrained_embedding(dimension=32), params=AGGLOMERATIVE, **FAST)


@pytest.fixture(scope="module")
def sample():
    """pyannote's 30 s two-speaker recording, 16 kHz mono, as int16 samples."""
    waveform, rate = DownmixedAudio(sample_rate=16000)(SAMPLE_FILE)
    assert rate == 16000
    return (waveform[0].numpy() * 32767).astype(np.int16)


def write_wav(path, samples):
    path.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(path, 16000, samples)
    return path


def sha256_tree(directory) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def recordings(tmp_path, sample):
    """recordings/a.wav and recordings/day2/b.wav (10 s each, different speech), and
    recordings/bad.wav (not audio)."""
    root = tmp_path / "recordings"
    write_wav(root / "a.wav", sample[:160000])
    write_wav(root / "day2" / "b.wav", sample[160000:320000])
    (root / "bad.wav").write_bytes(b"this is no audio file " * 100)
    (root / "notes.txt").write_text("not taken: not an audio extension")
    return root


def expected_rttm(pipeline_dir, path, uri, **speakers) -> str:
    output = load_pipeline(pipeline_dir)({"audio": str(path), "uri": uri}, **speakers)
    return output.speaker_diarization.to_rttm()


def diarize(*argv) -> int:
    return main(["diarize", *map(str, argv), "--no-progress"])


def test_a_directory_gives_one_rttm_per_good_file_equal_to_the_pipeline_s_and_names_the_bad_one(
    pipeline_dir, recordings, tmp_path, capsys
):
    before = sha256_tree(recordings)
    output = tmp_path / "rttm"
    assert diarize(pipeline_dir, recordings, "--output", output, "--json") == 1

    captured = capsys.readouterr()
    failures = [line for line in captured.err.splitlines() if "failed:" in line]
    assert len(failures) == 1
    assert failures[0].startswith(f"pyannote-wavlm-prune diarize: failed: {recordings / 'bad.wav'}: ")
    assert captured.out.strip().endswith(SUMMARY.format(total=3, diarized=2, skipped=0, failed=1))

    for name, path in [("a", recordings / "a.wav"), ("day2/b", recordings / "day2" / "b.wav")]:
        rttm = (output / f"{name}.rttm").read_text()
        assert rttm == expected_rttm(pipeline_dir, path, name.split("/")[-1])
        assert rttm.count("\n") >= 2  # turns, not an empty diarization
        assert all(line.split()[1] == path.stem for line in rttm.splitlines())  # uri: the stem
        turns = json.loads((output / f"{name}.json").read_text())
        assert set(turns) == {"diarization", "exclusive_diarization"}
        assert len(turns["diarization"]) == rttm.count("\n")
        assert set(turns["diarization"][0]) == {"start", "end", "speaker"}
    assert sorted(p.name for p in output.rglob("*.rttm")) == ["a.rttm", "b.rttm"]
    # nothing written among the inputs, nothing left half-written
    assert sha256_tree(recordings) == before
    assert not list(output.rglob("*.tmp"))


def test_a_rerun_skips_done_files_and_overwrite_diarizes_them_again(
    pipeline_dir, recordings, tmp_path, capsys
):
    output = tmp_path / "rttm"
    assert diarize(pipeline_dir, recordings, "--output", output) == 1
    good = (output / "a.rttm").read_text()
    # a done file is not diarized again: what it holds stays, whatever it is
    (output / "a.rttm").write_text("left by the first run\n")
    capsys.readouterr()

    assert diarize(pipeline_dir, recordings, "--output", output) == 1
    assert capsys.readouterr().out.strip().endswith(
        SUMMARY.format(total=3, diarized=0, skipped=2, failed=1))
    assert (output / "a.rttm").read_text() == "left by the first run\n"

    assert diarize(pipeline_dir, recordings, "--output", output, "--overwrite") == 1
    assert capsys.readouterr().out.strip().endswith(
        SUMMARY.format(total=3, diarized=2, skipped=0, failed=1))
    assert (output / "a.rttm").read_text() == good


def test_a_run_of_good_files_exits_0_and_json_is_added_on_a_rerun_with_json(
    pipeline_dir, recordings, tmp_path, capsys
):
    output = tmp_path / "rttm"
    good = [recordings / "a.wav", recordings / "day2" / "b.wav"]
    assert diarize(pipeline_dir, *good, "--output", output) == 0
    # files given by themselves: named by their stem, at the top of the output
    assert sorted(p.name for p in output.iterdir()) == ["a.rttm", "b.rttm", "diarize-options.json"]
    capsys.readouterr()
    # a file is done when all its outputs are: asking for JSON too diarizes both again
    assert diarize(pipeline_dir, *good, "--output", output, "--json") == 0
    assert capsys.readouterr().out.strip().endswith(
        SUMMARY.format(total=2, diarized=2, skipped=0, failed=0))
    assert (output / "b.json").is_file()


def test_a_list_file_names_files_and_directories_relative_to_its_own_directory(
    pipeline_dir, recordings, tmp_path, capsys, monkeypatch
):
    listed = tmp_path / "lists" / "files.txt"
    listed.parent.mkdir()
    listed.write_text("# the good ones\n../recordings/a.wav\n\n  ../recordings/day2  \n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative to the list, not to the working directory
    output = tmp_path / "rttm"
    assert diarize(pipeline_dir, "--list", listed, "--output", output) == 0
    # outside the list's directory: named as a file given by itself, or below its directory
    assert sorted(str(p.relative_to(output)) for p in output.rglob("*.rttm")) == ["a.rttm",
                                                                                 "b.rttm"]
    assert (output / "b.rttm").read_text() == expected_rttm(
        pipeline_dir, recordings / "day2" / "b.wav", "b")

    inside = recordings / "list.txt"  # a list beside its files: outputs mirror its directory
    inside.write_text("a.wav\nday2/b.wav\n")
    mirrored = tmp_path / "mirrored"
    assert diarize(pipeline_dir, "--list", inside, "--output", mirrored) == 0
    assert sorted(str(p.relative_to(mirrored)) for p in mirrored.rglob("*.rttm")) == [
        "a.rttm", "day2/b.rttm"]

    listed.write_text("../recordings/missing.wav\n")
    capsys.readouterr()
    assert diarize(pipeline_dir, "--list", listed, "--output", tmp_path / "other") == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"{listed}, line 1: ../recordings/missing.wav does not exist" in error


def test_files_of_one_stem_are_kept_apart_by_their_directories_or_refused(tmp_path, sample):
    for day in ("day1", "day2"):
        write_wav(tmp_path / "audio" / day / "x.wav", sample[:48000])
    day1, day2 = tmp_path / "audio" / "day1", tmp_path / "audio" / "day2"
    # from their common parent, the outputs mirror the sub-directories
    assert [str(audio.name) for audio in find_audio([tmp_path / "audio"])] == ["day1/x", "day2/x"]
    # given apart, both would write x.rttm
    with pytest.raises(ValueError, match=r"day1/x.wav and .*day2/x.wav would both write x.rttm"):
        find_audio([day1, day2])
    # two formats of one recording side by side
    (day1 / "x.flac").write_bytes(b"")
    with pytest.raises(ValueError, match=r"x.flac and .*x.wav would both write x.rttm"):
        find_audio([day1])
    # one file named twice (itself and in its directory) is diarized once
    (day1 / "x.flac").unlink()
    assert find_audio([day1, day1 / "x.wav"]) == [AudioInput(day1 / "x.wav", find_audio([day1])[0].name)]


def test_a_directory_search_takes_audio_files_only_sorted_and_skips_hidden_ones_and_pipes(
    recordings
):
    (recordings / ".hidden").mkdir()
    (recordings / ".hidden" / "c.wav").write_bytes(b"")
    (recordings / "._a.wav").write_bytes(b"")  # macOS's resource forks
    os.mkfifo(recordings / "pipe.wav")  # reading it would block for ever
    (recordings / "UPPER.WAV").write_bytes(b"")
    assert [str(audio.name) for audio in find_audio([recordings])] == [
        "UPPER", "a", "bad", "day2/b"]


def test_duplicate_stems_through_the_command_line_stop_before_any_work(
    pipeline_dir, tmp_path, sample, capsys
):
    for day in ("day1", "day2"):
        write_wav(tmp_path / "audio" / day / "x.wav", sample[:48000])
    output = tmp_path / "rttm"
    assert diarize(pipeline_dir, tmp_path / "audio" / "day1", tmp_path / "audio" / "day2",
                   "--output", output) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "would both write x.rttm" in error
    assert not output.exists()


@pytest.mark.parametrize("where", ["inside an input", "the pipeline", "an input"])
def test_an_output_among_the_inputs_is_refused_and_nothing_is_written(
    pipeline_dir, recordings, where, capsys
):
    before, pipeline_before = sha256_tree(recordings), sha256_tree(pipeline_dir)
    output = {"inside an input": recordings / "rttm", "the pipeline": pipeline_dir,
              "an input": recordings}[where]
    assert diarize(pipeline_dir, recordings, "--output", output) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert sha256_tree(recordings) == before and sha256_tree(pipeline_dir) == pipeline_before


def test_no_output_reaches_an_input_directory_through_a_list_entry_or_a_link(
    pipeline_dir, recordings, tmp_path, capsys
):
    before = sha256_tree(recordings)
    listed = tmp_path / "files.txt"
    listed.write_text(f"{recordings}\n")
    assert diarize(pipeline_dir, "--list", listed, "--output", recordings / "rttm") == 2
    assert f"lies inside {recordings} (in --list {listed})" in capsys.readouterr().err

    output = tmp_path / "rttm"
    output.mkdir()
    (output / "day2").symlink_to(recordings / "day2")  # day2/b.rttm would land among the inputs
    assert diarize(pipeline_dir, recordings, "--output", output) == 2
    assert "lies inside input" in capsys.readouterr().err
    assert sha256_tree(recordings) == before


def test_speaker_counts_reach_the_pipeline_and_a_rerun_with_other_ones_is_refused(
    pipeline_dir, recordings, tmp_path, capsys
):
    output = tmp_path / "rttm"
    a = recordings / "a.wav"
    assert diarize(pipeline_dir, a, "--output", output, "--num-speakers", "2") == 0
    rttm = (output / "a.rttm").read_text()
    assert rttm == expected_rttm(pipeline_dir, a, "a", num_speakers=2)
    assert len({line.split()[7] for line in rttm.splitlines()}) == 2
    assert rttm != expected_rttm(pipeline_dir, a, "a", num_speakers=1)  # the option matters

    capsys.readouterr()
    # the done file was diarized with 2 speakers: resuming with 1 would mix the two runs
    assert diarize(pipeline_dir, a, "--output", output, "--num-speakers", "1") == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "num_speakers: 2 -> 1" in error
    assert diarize(pipeline_dir, a, "--output", output, "--num-speakers", "1", "--overwrite") == 0
    assert (output / "a.rttm").read_text() == expected_rttm(pipeline_dir, a, "a", num_speakers=1)


def test_other_options_are_refused_even_for_files_not_done_yet_and_overwrite_starts_over(
    pipeline_dir, recordings, tmp_path, capsys
):
    output = tmp_path / "rttm"
    a, b = recordings / "a.wav", recordings / "day2" / "b.wav"
    assert diarize(pipeline_dir, a, "--output", output) == 0
    capsys.readouterr()
    # b.wav has no output yet, but the record would then describe a.rttm wrongly
    assert diarize(pipeline_dir, b, "--output", output, "--num-speakers", "2") == 2
    assert "num_speakers: null -> 2" in capsys.readouterr().err
    # a.rttm, of a file not given now, would stay beside a record of other options
    assert diarize(pipeline_dir, b, "--output", output, "--num-speakers", "2", "--overwrite") == 2
    assert "a.rttm (with 0 more) of a file not given now" in capsys.readouterr().err
    assert sorted(p.name for p in output.iterdir()) == ["a.rttm", "diarize-options.json"]
    # given both, --overwrite starts over with the new options
    assert diarize(pipeline_dir, a, b, "--output", output, "--num-speakers", "2",
                   "--overwrite") == 0
    assert (output / "a.rttm").read_text() == expected_rttm(pipeline_dir, a, "a", num_speakers=2)
    assert json.loads((output / "diarize-options.json").read_text())["num_speakers"] == 2


def test_an_overwrite_with_other_options_removes_the_old_outputs_before_any_file_is_diarized(
    pipeline_dir, recordings, tmp_path, monkeypatch
):
    output = tmp_path / "rttm"
    a, b = recordings / "a.wav", recordings / "day2" / "b.wav"
    assert diarize(pipeline_dir, a, b, "--output", output) == 0

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    # killed before the first file of the new run: no output of the old options is left to be
    # skipped as done by a resumed run
    monkeypatch.setattr("pyannote_wavlm_prune.pipelines.diarize.diarize_files", interrupted)
    with pytest.raises(KeyboardInterrupt):
        diarize(pipeline_dir, a, b, "--output", output, "--num-speakers", "2", "--overwrite")
    assert sorted(p.name for p in output.iterdir()) == ["diarize-options.json"]


def test_rttm_files_the_command_did_not_write_are_not_taken_for_done_ones(
    pipeline_dir, recordings, tmp_path, capsys
):
    output = tmp_path / "rttm"
    output.mkdir()
    (output / "a.rttm").write_text("SPEAKER a 1 0.000 1.000 <NA> <NA> X <NA> <NA>\n")
    assert diarize(pipeline_dir, recordings / "a.wav", "--output", output) == 2
    assert "holds a.rttm but no diarize-options.json" in capsys.readouterr().err


@pytest.mark.parametrize("options, message", [
    (["--min-speakers", "3", "--max-speakers", "2"], "--min-speakers 3 > --max-speakers 2"),
    (["--num-speakers", "2", "--max-speakers", "3"], "expected either an exact number or bounds"),
    (["--device", "tpu"], "--device tpu: expected auto, cpu, cuda, cuda:N or mps"),
])
def test_bad_options_are_one_line_errors_before_any_work(
    pipeline_dir, recordings, tmp_path, options, message, capsys
):
    output = tmp_path / "rttm"
    assert diarize(pipeline_dir, recordings, "--output", output, *options) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error
    assert not output.exists()


def test_a_file_of_nan_samples_is_a_bad_file_and_not_an_empty_diarization(
    pipeline_dir, recordings, tmp_path, capsys
):
    nan = recordings / "nan.wav"
    wavfile.write(nan, 16000, np.full(48000, np.nan, dtype=np.float32))
    output = tmp_path / "rttm"
    assert diarize(pipeline_dir, recordings, "--output", output) == 1
    failures = [line for line in capsys.readouterr().err.splitlines() if "failed:" in line]
    assert any(str(nan) in line for line in failures)
    assert not (output / "nan.rttm").exists()


def test_a_checkpoint_given_as_the_pipeline_is_a_one_line_error(recordings, tmp_path, capsys):
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(bytes(range(256)))
    assert diarize(checkpoint, recordings, "--output", tmp_path / "o") == 2
    assert "is a file but no config.yaml" in capsys.readouterr().err


def exit_status(argv) -> int:
    """What the shell sees: main's return value, or argparse's exit."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


@pytest.mark.parametrize("argv", [["--num-speakers", "0"], ["--max-speakers", "two"], []])
def test_usage_errors_exit_2(pipeline_dir, recordings, tmp_path, argv, capsys):
    inputs = [str(recordings)] if argv else []  # no INPUT at all is the third case
    assert exit_status(["diarize", str(pipeline_dir), "--output", str(tmp_path / "o"), *argv,
                        *inputs]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "pyannote-wavlm-prune diarize: error: ")
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_a_cuda_device_without_cuda_is_refused(pipeline_dir, recordings, tmp_path, capsys):
    assert diarize(pipeline_dir, recordings, "--output", tmp_path / "o", "--device", "cuda") == 2
    assert "CUDA is not available here" in capsys.readouterr().err


def test_an_interruption_stops_the_run_and_a_rerun_resumes_after_the_last_whole_file(tmp_path):
    from pyannote.core import Annotation, Segment

    def pipeline(interrupt: str | None = None):
        """A pipeline giving one turn per file, interrupted (Ctrl-C) on file `interrupt`."""
        def diarize_one(file, **kwargs):
            if file["uri"] == interrupt:
                raise KeyboardInterrupt
            annotation = Annotation(uri=file["uri"])
            annotation[Segment(0, 1)] = "A"
            return annotation
        return diarize_one

    files = [AudioInput(tmp_path / f"{name}.wav", PurePath(name)) for name in ("a", "b", "c")]
    with pytest.raises(KeyboardInterrupt):  # an interruption is no bad file: the run stops
        diarize_files(pipeline(interrupt="b"), files, tmp_path / "out", progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.rttm"]

    run = diarize_files(pipeline(), files, tmp_path / "out", progress=False)
    assert ([a.uri for a in run.skipped], [a.uri for a in run.diarized], run.failed) == (
        ["a"], ["b", "c"], [])


def test_files_go_through_the_pipeline_s_batch_convention_in_one_call_done_ones_left_out(
        tmp_path):
    from pyannote.core import Annotation, Segment

    class Batched:
        """apply_batch as pyannote's convention has it; "b" fails, and is yielded so."""
        calls: list[list[str]] = []

        def apply_batch(self, files, errors="raise", **kwargs):
            assert errors == "yield" and kwargs == {"num_speakers": 2}
            Batched.calls.append([])
            for file in files:
                Batched.calls[-1].append(file["uri"])
                if file["uri"] == "b":
                    yield file, ValueError("b is broken")
                    continue
                annotation = Annotation(uri=file["uri"])
                annotation[Segment(0, 1)] = "A"
                yield file, annotation

    files = [AudioInput(tmp_path / f"{name}.wav", PurePath(name)) for name in ("a", "b", "c", "d")]
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.rttm").write_text("")  # done before
    run = diarize_files(Batched(), files, tmp_path / "out", progress=False, num_speakers=2)
    assert Batched.calls == [["b", "c", "d"]]
    assert ([a.uri for a in run.skipped], [a.uri for a in run.diarized]) == (["a"], ["c", "d"])
    assert [(a.uri, str(e)) for a, e in run.failed] == [("b", "b is broken")]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.rttm", "c.rttm", "d.rttm"]


def test_the_output_checks_resolve_each_path_a_bounded_number_of_times(tmp_path, monkeypatch):
    """The checks before the first file take time linear in the number of files (they once
    resolved every input for every output: 2,000 files took 311 s before the first one)."""
    import pathlib

    from pyannote_wavlm_prune.pipelines.diarize import DiarizationRun

    pipeline = tmp_path / "pipeline"
    pipeline.mkdir()
    (pipeline / "config.yaml").write_text("pipeline: {}\n")

    class Stub:  # no pipeline to load, no file to diarize: the checks alone
        def to(self, device):
            return self

    monkeypatch.setattr("pyannote_wavlm_prune.pipelines.load_pipeline", lambda path: Stub())
    monkeypatch.setattr("pyannote_wavlm_prune.pipelines.diarize.diarize_files",
                        lambda *args, **kwargs: DiarizationRun())
    resolve = pathlib.Path.resolve
    calls = []

    def counted(self, *args, **kwargs):
        calls.append(self)
        return resolve(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "resolve", counted)
    resolutions = {}
    for num_files in (30, 60):
        recordings = tmp_path / f"recordings-{num_files}"
        recordings.mkdir()
        for index in range(num_files):
            (recordings / f"f{index:03d}.wav").write_bytes(b"")  # found by name only
        calls.clear()
        assert diarize(pipeline, recordings, "--output", tmp_path / f"out-{num_files}") == 0
        resolutions[num_files] = len(calls)
    # per file: found (1), indexed as an input (1), its RTTM and JSON checked (2); a few more
    # for the pipeline, the output and the working directory
    assert resolutions[60] - resolutions[30] == 4 * 30
    assert resolutions[30] <= 4 * 30 + 20
