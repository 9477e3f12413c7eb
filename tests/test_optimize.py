"""Hyper-parameter optimization on a protocol's development set writes a loadable pipeline."""

import argparse
from pathlib import Path

import pytest
import yaml
from helpers import tiny_model
from pyannote.audio import Pipeline

from pyannote_wavlm_prune.commands import optimize as optimize_command
from pyannote_wavlm_prune.pipelines import SpeakerDiarization, export_pipeline
from pyannote_wavlm_prune.pipelines.embedding_training import untrained_embedding
from pyannote_wavlm_prune.pipelines.evaluate import get_files
from pyannote_wavlm_prune.pipelines.optimize import optimize_pipeline

PRUNED = {
    "conv_channels": [16, 24, 8, 32, 12, 20, 32],
    "kept_heads": [[0, 2], [1]],
    "ffn_widths": [16, 40],
}
START = {
    "segmentation": {"min_duration_off": 0.0},
    "clustering": {"method": "centroid", "min_cluster_size": 2, "threshold": 0.7},
}


@pytest.fixture(scope="module")
def pipeline_directory(tmp_path_factory):
    return export_pipeline(
        tmp_path_factory.mktemp("optimize") / "pipeline",
        tiny_model(duration=5.0, structure=PRUNED),
        untrained_embedding(dimension=32),
        params=START,
        segmentation_step=1.0,
        embedding_batch_size=16,
    )


def database_yml(protocol) -> Path:
    return next(iter(protocol.preprocessors["audio"].registry.configs))


def test_three_trials_write_a_tuned_pipeline_that_reproduces_its_loss(
    pipeline_directory, tiny_protocol, tmp_path
):
    parser = argparse.ArgumentParser()
    optimize_command.add_arguments(parser)
    tuned = tmp_path / "tuned"
    args = parser.parse_args([
        str(pipeline_directory), "--output", str(tuned), "--protocol", tiny_protocol.name,
        "--database", str(database_yml(tiny_protocol)), "--iterations", "3", "--no-progress",
    ])
    assert optimize_command.run(args) == 0

    config = yaml.safe_load((tuned / "config.yaml").read_text())
    assert config["pipeline"]["name"] == "pyannote_wavlm_prune.pipelines.SpeakerDiarization"
    optimization = config["optimization"]
    assert optimization["num_trials"] == 3
    assert optimization["num_files"] == 2
    assert (optimization["protocol"], optimization["subset"]) == (tiny_protocol.name, "development")
    assert set(config["params"]["clustering"]) == {"method", "min_cluster_size", "threshold"}

    # the saved hyper-parameters reproduce the best loss of the search, from scratch
    pipeline = Pipeline.from_pretrained(tuned)
    assert isinstance(pipeline, SpeakerDiarization)
    assert pipeline.parameters(instantiated=True) == config["params"]
    metric = pipeline.get_metric()
    for file in get_files(tiny_protocol, "development"):
        output = pipeline(file)
        metric(file["annotation"], output.speaker_diarization, uem=file["annotated"])
    assert abs(metric) == pytest.approx(optimization["loss"], abs=1e-9)


def test_frozen_parameters_keep_their_value_and_the_first_trial_is_the_start(
    pipeline_directory, tiny_protocol
):
    pipeline = Pipeline.from_pretrained(pipeline_directory)
    files = get_files(tiny_protocol, "development")[:1]
    result = optimize_pipeline(
        pipeline, files, num_iterations=1, num_speakers="oracle",
        freeze={"segmentation": {"min_duration_off": 0.25}}, show_progress=False,
    )
    assert result.num_trials == 1 and result.directory is None
    assert result.params["segmentation"] == {"min_duration_off": 0.25}
    assert result.params["clustering"] == START["clustering"]  # warm start: the only trial
    # files come back as they went: no cached segmentation, no oracle number of speakers
    assert not [key for key in files[0] if "training_cache" in key or key == "pipeline_kwargs"]


def test_optimize_shows_trial_i_of_n_and_still_runs_n_trials(pipeline_directory, tiny_protocol,
                                                             capsys):
    files = get_files(tiny_protocol, "development")[:1]
    result = optimize_pipeline(pipeline_directory, files, num_iterations=3, show_progress=True)
    assert result.num_trials == 3
    shown = capsys.readouterr().err
    assert "trials" in shown and "3/3" in shown
    assert f"best {100 * result.loss:.2f} %" in shown


def test_optimize_refuses_a_non_empty_output_before_searching(pipeline_directory, tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        optimize_pipeline(pipeline_directory, [], output=tmp_path)


def test_pyannote_audio_optimize_command_tunes_an_exported_pipeline(
    pipeline_directory, tiny_protocol, tmp_path
):
    # `pyannote-audio optimize config.yaml PROTOCOL --registry database.yml ...`, in-process
    from pyannote.audio.__main__ import Device, NumSpeakers, optimize

    copy = tmp_path / "pipeline"
    copy.mkdir()
    for path in pipeline_directory.rglob("*"):
        if path.is_file():
            target = copy / path.relative_to(pipeline_directory)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    optimize(
        copy / "config.yaml", tiny_protocol.name, registry=database_yml(tiny_protocol),
        device=Device.CPU, max_iterations=1, num_speakers=NumSpeakers.ORACLE,
    )
    result = copy / f"config.{tiny_protocol.name}.development.OracleNumSpeakers.yaml"
    assert yaml.safe_load(result.read_text())["optimization"]["status"]["best_loss"] > 0
    tuned = Pipeline.from_pretrained(result)
    assert isinstance(tuned, SpeakerDiarization)
    # pyannote's command starts from default_parameters(): with one trial, that is the result
    assert tuned.parameters(instantiated=True) == tuned.default_parameters()
    assert tuned.parameters(instantiated=True)["clustering"]["min_cluster_size"] == 12
