"""Every value checked where it enters, runs that meet kept apart, one line per user error.

The cases of a trial as a hostile but fair user would run it: a hand-edited config.yaml, an
imported config.toml, a checkpoint's hyper-parameters, an API argument, two diarize runs into
one output, bad training references, and every command given bad inputs.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from helpers import FAST_PIPELINE as FAST
from helpers import TINY_PRUNED_STRUCTURE as PRUNED
from helpers import tiny_model

from pyannote_wavlm_prune.cli import main
from pyannote_wavlm_prune.pipelines import export_pipeline, load_pipeline

AGGLOMERATIVE = {
    "segmentation": {"min_duration_off": 0.0},
    "clustering": {"method": "centroid", "min_cluster_size": 2, "threshold": 0.7},
}


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    from pyannote_wavlm_prune.pipelines.embedding_training import untrained_embedding

    return export_pipeline(tmp_path_factory.mktemp("hostile") / "pipeline",
                           tiny_model(duration=5.0, structure=PRUNED),
                           untrained_embedding(dimension=32), params=AGGLOMERATIVE, **FAST)


def edited(pipeline_dir, tmp_path, edit):
    """A copy of `pipeline_dir` whose config.yaml `edit(config)` changed; its config file."""
    copy = tmp_path / "edited"
    shutil.copytree(pipeline_dir, copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    edit(config)
    (copy / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return copy / "config.yaml"


def one_line_error(capsys) -> str:
    """What the command line printed on stderr: one line, no traceback."""
    error = capsys.readouterr().err
    assert "Traceback" not in error
    lines = error.strip().splitlines()
    assert len(lines) == 1, error
    return lines[0]


# ------------------------------------------------ cases 2 and 7: config.yaml checked at load


def _set(section, key, value):
    def edit(config):
        target = config["pipeline"]["params"] if section == "pipeline" else \
            config["params"][section]
        target[key] = value
    return edit


def _drop_params(config):
    del config["params"]


CONFIG_CASES = {
    # case 2: pyannote's Inference takes a negative batch as "one chunk": one turn, exit 0
    "negative segmentation_batch_size": (
        _set("pipeline", "segmentation_batch_size", -3),
        "pipeline.params.segmentation_batch_size=-3: expected an integer >= 1"),
    "segmentation_step not a number": (
        _set("pipeline", "segmentation_step", "abc"),
        "pipeline.params.segmentation_step='abc': expected a number in (0, 1]"),
    "negative segmentation_step": (
        _set("pipeline", "segmentation_step", -0.1),
        "pipeline.params.segmentation_step=-0.1: expected a number in (0, 1]"),
    "zero segmentation_step (silently the default)": (
        _set("pipeline", "segmentation_step", 0),
        "pipeline.params.segmentation_step=0: expected a number in (0, 1]"),
    "zero segmentation_batch_size": (
        _set("pipeline", "segmentation_batch_size", 0),
        "pipeline.params.segmentation_batch_size=0: expected an integer >= 1"),
    "zero embedding_batch_size": (
        _set("pipeline", "embedding_batch_size", 0),
        "pipeline.params.embedding_batch_size=0: expected an integer >= 1"),
    "unknown key": (
        _set("pipeline", "segmentation_stepp", 0.5),
        "pipeline.params.segmentation_stepp is not a setting of the pipeline (did you mean "
        "'segmentation_step'?)"),
    "no params block": (_drop_params, "has no 'params:' entry"),
    "negative threshold": (
        _set("clustering", "threshold", -0.5),
        "params.clustering.threshold=-0.5: expected a finite number >= 0"),
    "NaN threshold": (
        _set("clustering", "threshold", float("nan")),
        "params.clustering.threshold=nan: expected a finite number >= 0"),
    "negative min_cluster_size": (
        _set("clustering", "min_cluster_size", -2),
        "params.clustering.min_cluster_size=-2: expected an integer >= 1"),
    "negative min_duration_off": (
        _set("segmentation", "min_duration_off", -1.0),
        "params.segmentation.min_duration_off=-1.0: expected a duration >= 0"),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_a_bad_config_yaml_is_refused_at_load_naming_the_file_the_key_and_the_value(
        case, pipeline_dir, tmp_path):
    edit, message = CONFIG_CASES[case]
    config_file = edited(pipeline_dir, tmp_path, edit)
    with pytest.raises(ValueError) as error:
        load_pipeline(config_file.parent)
    text = str(error.value)
    assert "\n" not in text
    assert text.startswith(f"{config_file}: ") or text.startswith(f"{config_file} ")
    assert message in text


def test_a_bad_override_is_refused_like_config_yaml(pipeline_dir):
    with pytest.raises(ValueError, match=r"segmentation_batch_size=-3: expected an integer >= 1"):
        load_pipeline(pipeline_dir, segmentation_batch_size=-3)


def test_diarize_with_a_bad_config_yaml_says_so_in_one_line_and_writes_nothing(
        pipeline_dir, tmp_path, capsys):
    config_file = edited(pipeline_dir, tmp_path, _set("pipeline", "segmentation_batch_size", -3))
    audio = tmp_path / "a.wav"
    from scipy.io import wavfile

    wavfile.write(audio, 16000, np.zeros(16000 * 2, np.int16))
    assert main(["diarize", str(config_file.parent), str(audio), "--output",
                 str(tmp_path / "out"), "--no-progress"]) == 2
    line = one_line_error(capsys)
    assert f"{config_file}: pipeline.params.segmentation_batch_size=-3" in line
    assert not list((tmp_path / "out").glob("*.rttm"))


def test_the_class_export_and_save_refuse_what_config_yaml_refuses(pipeline_dir, tmp_path):
    from pyannote_wavlm_prune.pipelines import SpeakerDiarization

    pipeline = load_pipeline(pipeline_dir)
    with pytest.raises(ValueError, match=r"segmentation_batch_size=-3: expected an integer >= 1"):
        SpeakerDiarization(segmentation=pipeline.segmentation_source,
                           embedding=pipeline._embedding.model_, segmentation_batch_size=-3)
    with pytest.raises(ValueError, match=r"segmentation_step=0: expected a number in \(0, 1\]"):
        export_pipeline(tmp_path / "new", pipeline.segmentation_source, segmentation_step=0,
                        clustering="OracleClustering")
    with pytest.raises(ValueError, match=r"threshold=nan: expected a finite number >= 0"):
        pipeline.instantiate({"clustering": {"threshold": math.nan}})
    assert not (tmp_path / "new").exists()


def test_one_table_lists_the_settings_of_the_class_export_and_the_command_line():
    """The settings are written once: the class's and export's signatures take exactly the
    table's names, with its defaults; save passes each; the command line reads its types."""
    import inspect

    from pyannote_wavlm_prune.pipelines.speaker_diarization import SpeakerDiarization
    from pyannote_wavlm_prune.settings import DIARIZATION_OPTIONS, SETTINGS

    pyannote_own = {"segmentation_step", "embedding_exclude_overlap", "der_variant"}
    ours = inspect.signature(SpeakerDiarization).parameters
    assert {name for name in ours if name in SETTINGS} == set(SETTINGS) - pyannote_own
    for name in set(SETTINGS) - pyannote_own:
        assert ours[name].default == SETTINGS[name].default, name
    from pyannote_wavlm_prune.deploy.runtime import EMBEDDING_RUNTIMES, RUNTIMES
    from pyannote_wavlm_prune.settings import EMBEDDING_RUNTIMES as EMBEDDING_NAMES
    from pyannote_wavlm_prune.settings import SEGMENTATION_RUNTIMES

    assert list(SEGMENTATION_RUNTIMES) == list(RUNTIMES)
    assert list(EMBEDDING_NAMES) == list(EMBEDDING_RUNTIMES)
    export = inspect.signature(export_pipeline).parameters
    assert set(SETTINGS) - set(DIARIZATION_OPTIONS) <= set(export)
    for name in set(SETTINGS) - set(DIARIZATION_OPTIONS):
        assert export[name].default == SETTINGS[name].default, name


# ------------------------------------------------ case 6: import-diarizen's config.toml


@pytest.mark.parametrize("table, key, value, message", [
    ("inference.args", "seg_duration", "0", "[inference.args] seg_duration = 0: expected a "
                                            "duration > 0"),
    ("inference.args", "batch_size", "-1", "[inference.args] batch_size = -1: expected an "
                                           "integer >= 1"),
    ("inference.args", "segmentation_step", "0", "[inference.args] segmentation_step = 0: "
                                                 "expected a number in (0, 1]"),
    ("clustering.args", "Fa", "nan", "[clustering.args] Fa = nan: expected a finite number > 0"),
    ("model.args", "selected_channel", '"left"', "[model.args] selected_channel = 'left': "
                                                 "expected an integer >= 0"),
])
def test_import_diarizen_refuses_a_config_toml_value_its_pipeline_could_not_run(
        table, key, value, message, tmp_path):
    from diarizen_helpers import TINY_BACKEND, TINY_PRUNED, write_hub

    from pyannote_wavlm_prune import import_diarizen

    hub = tmp_path / "hub"
    write_hub(hub, TINY_PRUNED, backend=TINY_BACKEND, seg_duration=8)
    lines = (hub / "config.toml").read_text().splitlines()
    section = lines.index(f"[{table}]")
    lines = [line for line in lines if not line.startswith(f"{key} =")]
    lines.insert(section + 1, f"{key} = {value}")
    (hub / "config.toml").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError) as error:
        import_diarizen(hub, tmp_path / "pipeline", structure=TINY_PRUNED)
    assert str(error.value).startswith(f"{hub / 'config.toml'} ")
    assert message in str(error.value)
    assert not (tmp_path / "pipeline").exists()


class Hostile:
    def __reduce__(self):
        return (os.getcwd, ())


def test_import_diarizen_refuses_a_hostile_checkpoint_in_one_line(tmp_path, capsys):
    from diarizen_helpers import TINY_BACKEND, TINY_PRUNED, write_hub

    hub = tmp_path / "hub"
    write_hub(hub, TINY_PRUNED, backend=TINY_BACKEND, seg_duration=8)
    torch.save({"weights": Hostile()}, hub / "pytorch_model.bin")
    structure = tmp_path / "structure.json"
    structure.write_text(json.dumps(TINY_PRUNED))
    assert main(["import-diarizen", str(hub), "--output", str(tmp_path / "pipeline"),
                 "--structure", str(structure)]) == 2
    line = one_line_error(capsys)
    assert "posix.getcwd" in line and "refused" in line
    assert not (tmp_path / "pipeline").exists()


# ------------------------------------------------ case 8: speaker counts through the API


@pytest.mark.parametrize("counts", [
    {"num_speakers": float("nan")}, {"num_speakers": -1}, {"num_speakers": "2"},
    {"num_speakers": 0}, {"num_speakers": 1.5}, {"min_speakers": -2},
    {"min_speakers": 3, "max_speakers": 2},
])
def test_speaker_counts_that_mean_nothing_are_refused_by_the_api(counts, pipeline_dir):
    pipeline = load_pipeline(pipeline_dir)
    audio = {"waveform": torch.zeros(1, 16000 * 2), "sample_rate": 16000, "uri": "silence"}
    name, value = next(iter(counts.items()))
    with pytest.raises(ValueError, match=f"{name}={value!r}"):
        pipeline(audio, **counts)


def test_numpy_speaker_counts_are_counts(pipeline_dir):
    pipeline = load_pipeline(pipeline_dir)
    audio = {"waveform": 0.1 * torch.randn(1, 16000 * 2), "sample_rate": 16000, "uri": "noise"}
    output = pipeline(audio, num_speakers=np.int64(2))
    assert len(output.speaker_diarization.labels()) <= 2


# ------------------------------------------------ case 5: a checkpoint's hyper-parameters


@pytest.fixture
def checkpoint_with(tmp_path):
    """A tiny WavLMSegmentation checkpoint whose hyper-parameter wavlm= is replaced."""
    from pyannote_wavlm_prune.models.checkpoint import save_checkpoint

    path = save_checkpoint(tiny_model(), tmp_path / "model.ckpt")

    def rewrite(wavlm):
        checkpoint = torch.load(path, weights_only=False)
        checkpoint["hyper_parameters"]["wavlm"] = wavlm
        torch.save(checkpoint, path)
        return path
    return rewrite


def test_a_front_end_far_beyond_the_published_sizes_is_refused_before_allocation(
        checkpoint_with, monkeypatch):
    from transformers import WavLMConfig

    from pyannote_wavlm_prune.frontends import frontend
    from pyannote_wavlm_prune.models.loading import load_model

    huge = WavLMConfig(num_hidden_layers=64, hidden_size=8192, num_attention_heads=64,
                       intermediate_size=32768).to_dict()
    path = checkpoint_with(huge)

    def allocate(*args, **kwargs):
        raise AssertionError("the front end was allocated")

    monkeypatch.setattr(frontend.WavLMFrontEnd, "__init__", allocate)
    with pytest.raises(ValueError, match=r"about 52,085 M parameters \(64 layers of width "
                                         r"8192.*more than 4 times WavLM Large's 315 M"):
        load_model(path)


@pytest.mark.parametrize("outside", ["some/hub-repo", "directory"])
def test_a_front_end_named_inside_a_checkpoint_is_not_followed_unless_trusted(
        outside, checkpoint_with, tmp_path):
    from transformers import WavLMConfig, WavLMModel

    from pyannote_wavlm_prune.models.loading import UntrustedCheckpointError, load_model

    if outside == "directory":
        outside = str(tmp_path / "wavlm")
        WavLMModel(WavLMConfig(**{**tiny_model().hparams.wavlm})).save_pretrained(outside)
    path = checkpoint_with(outside)
    with pytest.raises(UntrustedCheckpointError,
                       match=f"names its front end wavlm={outside!r}, a hub name or a path"):
        load_model(path)
    if outside.startswith("/"):  # a trusted file's directory is read
        assert load_model(path, trusted=True).frontend.num_layers == 2


# ------------------------------------------------ cases 1, 3, 4: diarize runs that meet


@pytest.fixture
def two_files(tmp_path):
    from scipy.io import wavfile

    rng = np.random.default_rng(0)
    root = tmp_path / "audio"
    root.mkdir()
    for name in ("a", "b"):
        wavfile.write(root / f"{name}.wav", 16000, (3000 * rng.standard_normal(32000))
                      .astype(np.int16))
    return root


def diarize(*argv) -> int:
    return main(["diarize", *map(str, argv), "--no-progress"])


def test_a_second_diarize_run_into_a_locked_output_is_refused_naming_the_first(
        pipeline_dir, two_files, tmp_path, capsys):
    from pyannote_wavlm_prune.commands.diarize import LOCK
    from pyannote_wavlm_prune.files import exclusive_lock

    output = tmp_path / "out"
    output.mkdir()
    with exclusive_lock(output / LOCK, "the first run"):  # a run in progress holds it
        assert diarize(pipeline_dir, two_files, "--output", output, "--num-speakers", 2) == 2
        line = one_line_error(capsys)
        assert f"--output {output} is in use by another run (pid {os.getpid()} on " in line
        assert not list(output.glob("*.rttm")) and not (output / "diarize-options.json").exists()
    # released: the same command runs
    assert diarize(pipeline_dir, two_files, "--output", output, "--num-speakers", 2) == 0
    assert sorted(path.name for path in output.glob("*.rttm")) == ["a.rttm", "b.rttm"]


def test_a_lock_left_by_a_run_that_died_is_stale_and_taken_over(pipeline_dir, two_files,
                                                                tmp_path):
    from pyannote_wavlm_prune.commands.diarize import LOCK

    output = tmp_path / "out"
    output.mkdir()
    # a run killed with SIGKILL: its lock file stays, its lock went with it
    code = (f"import fcntl, os; d = os.open({str(output / LOCK)!r}, os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(d, fcntl.LOCK_EX); os.write(d, b'pid %d' % os.getpid()); os.kill("
            "os.getpid(), 9)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == -9
    assert (output / LOCK).read_text().startswith("pid ")
    assert diarize(pipeline_dir, two_files, "--output", output) == 0
    assert sorted(path.name for path in output.glob("*.rttm")) == ["a.rttm", "b.rttm"]
    assert not (output / LOCK).exists()  # a run that ends removes its lock file


def test_an_output_inside_the_pipeline_directory_named_by_its_config_yaml_is_refused(
        pipeline_dir, two_files, tmp_path, capsys):
    pipeline = tmp_path / "pipeline"
    shutil.copytree(pipeline_dir, pipeline)
    before = sorted(path.name for path in pipeline.rglob("*"))
    assert diarize(pipeline / "config.yaml", two_files, "--output", pipeline / "rttm") == 2
    line = one_line_error(capsys)
    assert f"{pipeline / 'rttm'}" in line and "the pipeline" in line
    assert sorted(path.name for path in pipeline.rglob("*")) == before


@pytest.mark.parametrize("content", ['{"pipeline": {"pa', "null", "[1, 2]"])
def test_a_corrupt_options_record_is_named_and_overwrite_replaces_it(
        content, pipeline_dir, two_files, tmp_path, capsys):
    output = tmp_path / "out"
    assert diarize(pipeline_dir, two_files, "--output", output) == 0
    record = output / "diarize-options.json"
    recorded = json.loads(record.read_text())
    record.write_text(content)
    assert diarize(pipeline_dir, two_files, "--output", output) == 2
    line = one_line_error(capsys)
    assert f"corrupt {record}" in line and "--overwrite" in line
    assert diarize(pipeline_dir, two_files, "--output", output, "--overwrite") == 0
    assert json.loads(record.read_text()) == recorded
    assert sorted(path.name for path in output.glob("*.rttm")) == ["a.rttm", "b.rttm"]


# ------------------------------------------------ case 9: training references


def write_corpus(root, train_rttm: str, uem: str = "one 1 0.000 2.000\ntwo 1 0.000 2.000\n"):
    """A two-file protocol (2 s of noise each): database.yml, lists, RTTM, UEM."""
    from scipy.io import wavfile

    rng = np.random.default_rng(1)
    (root / "audio").mkdir(parents=True)
    for uri in ("one", "two"):
        wavfile.write(root / "audio" / f"{uri}.wav", 16000,
                      (3000 * rng.standard_normal(32000)).astype(np.int16))
    (root / "train.lst").write_text("one\ntwo\n")
    (root / "train.rttm").write_text(train_rttm)
    (root / "train.uem").write_text(uem)
    subset = {"uri": "train.lst", "annotation": "train.rttm", "annotated": "train.uem"}
    database = {"Databases": {"Tiny": "audio/{uri}.wav"},
                "Protocols": {"Tiny": {"SpeakerDiarization": {"bad": {
                    "train": subset, "development": subset}}}}}
    (root / "database.yml").write_text(yaml.safe_dump(database))
    return root / "database.yml"


GOOD = "SPEAKER one 1 0.000 1.000 <NA> <NA> A <NA> <NA>\n" \
       "SPEAKER two 1 0.500 1.500 <NA> <NA> B <NA> <NA>\n"


@pytest.mark.parametrize("line, problem", [
    ("SPEAKER two 1 -1.000 1.000 <NA> <NA> A <NA> <NA>", "start -1.000, expected a finite time"),
    ("SPEAKER two 1 0.200 -0.500 <NA> <NA> A <NA> <NA>", "duration -0.500, expected a finite "
                                                         "duration > 0"),
    ("SPEAKER two 1 nan 1.000 <NA> <NA> A <NA> <NA>", "start nan, expected a finite time"),
    ("SPEAKER two 1 1.000 500.000 <NA> <NA> A <NA> <NA>", "the turn ends at 501 s, after the "
                                                          "audio (2 s)"),
    ("SPEAKER two 1 0.500 1.500 <NA> <NA> B <NA> <NA>", "repeats line 2"),
])
def test_train_refuses_bad_reference_turns_naming_the_file_and_line(line, problem, tmp_path,
                                                                   capsys):
    database = write_corpus(tmp_path / "corpus", GOOD + line + "\n")
    assert main(["train", "--protocol", "Tiny.SpeakerDiarization.bad", "--database",
                 str(database), "--output", str(tmp_path / "stage"), "--wavlm", "preset:tiny",
                 "--max-epochs", "1", "--limit-train-batches", "1", "--limit-val-batches", "1",
                 "--no-progress"]) == 2
    text = one_line_error(capsys)
    assert f"two: {tmp_path / 'corpus' / 'train.rttm'} line 3: {problem}" in text
    assert not (tmp_path / "stage" / "model.ckpt").exists()


def test_a_uem_past_the_file_s_end_is_named(tmp_path):
    from pyannote_wavlm_prune.data.protocols import get_protocol
    from pyannote_wavlm_prune.data.references import check_references

    uem = "one 1 0.000 2.000\ntwo 1 0.000 9.000\n"
    protocol = get_protocol(write_corpus(tmp_path / "corpus", GOOD, uem))
    with pytest.raises(ValueError, match=f"two: {tmp_path / 'corpus' / 'train.uem'} line 2: "
                                         r"the region ends at 9 s, after the audio \(2 s\)"):
        check_references(protocol)
    (tmp_path / "corpus" / "train.uem").write_text("one 1 0.000 2.000\ntwo 1 0.000 2.000\n")
    check_references(protocol)  # the good ones pass


# ------------------------------------------------ case 10: every command, bad inputs, one line


BAD_COMMAND_LINES = [
    ["quickstart", "--output", "qs", "--data", "notacorpus"],
    ["simulate", "sim", "--source", "emptydir"],
    ["train", "--protocol", "X.SpeakerDiarization.y", "--database", "bad.yaml", "--output", "t"],
    ["train", "--protocol", "X.SpeakerDiarization.y", "--database", "list.yaml", "--output", "t"],
    ["prune", "--protocol", "X.SpeakerDiarization.y", "--database", "bad.yaml", "--teacher",
     "bad.ckpt", "--output", "p"],
    ["distill", "--protocol", "X.SpeakerDiarization.y", "--database", "list.yaml", "--teacher",
     "bad.ckpt", "--student", "bad.ckpt", "--output", "d"],
    ["finetune", "--protocol", "X.SpeakerDiarization.y", "--database", "notprotocols.yml",
     "--model", "bad.ckpt", "--output", "f"],
    ["average", "bad.ckpt", "bad.ckpt", "--output", "avg.ckpt"],
    ["recipe", "bad.yaml"],
    ["sweep", "bad.yaml"],
    ["export", "--output", "e", "--segmentation", "bad.ckpt"],
    ["export", "--output", "e", "--segmentation", "bad.ckpt", "--params", "bad.yaml"],
    ["import-diarizen", "emptydir", "--output", "i"],
    ["optimize", "pipe", "--protocol", "X.SpeakerDiarization.y", "--database", "list.yaml",
     "--output", "o"],
    ["diarize", "pipe", "a.wav", "--output", "dz"],
    ["diarize", "emptydir", "--list", "latin1.txt", "--output", "dz"],
    ["evaluate", "pipe", "--protocol", "X.SpeakerDiarization.y", "--database", "bad.yaml"],
    ["bench", "bad.ckpt"],
    ["export-onnx", "bad.ckpt", "--output", "x.onnx"],
]


def test_every_command_line_given_bad_inputs_says_so_in_one_line_without_a_traceback(
        tmp_path, monkeypatch, capsys):
    from pyannote_wavlm_prune.cli import COMMANDS

    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("not: [valid")
    (tmp_path / "list.yaml").write_text("- 1\n")
    (tmp_path / "notprotocols.yml").write_text("Protocols: [1]\n")
    (tmp_path / "bad.ckpt").write_bytes(b"garbage bytes \x00\x01")
    (tmp_path / "a.wav").write_bytes(b"x")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9.wav\n".encode("latin-1"))
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "notacorpus").mkdir()
    (tmp_path / "notacorpus" / "database.yml").write_text("x: 1\n")
    (tmp_path / "pipe").mkdir()
    (tmp_path / "pipe" / "config.yaml").write_text(
        "pipeline: {name: pyannote_wavlm_prune.pipelines.SpeakerDiarization, params: "
        "{segmentation: $model/segmentation, segmentation_step: abc}}\nparams: {}\n")
    assert {argv[0] for argv in BAD_COMMAND_LINES} == set(COMMANDS)
    for argv in BAD_COMMAND_LINES:
        assert main(argv) == 2, argv
        line = one_line_error(capsys)
        assert line.startswith(f"pyannote-wavlm-prune {argv[0]}: error: "), line
        # the file at fault is named
        named = [token for token in argv[1:] if os.path.exists(token) and token not in (
            "emptydir",)]
        assert not named or any(name in line for name in named), (argv, line)


def test_debug_shows_the_traceback_of_a_user_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("not: [valid")
    with pytest.raises(ValueError, match="bad.yaml is not valid YAML"):
        main(["--debug", "train", "--protocol", "X.SpeakerDiarization.y", "--database",
              "bad.yaml", "--output", "t"])
