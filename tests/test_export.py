"""Exported pipeline directories: what they hold, how they reload, and clear errors."""

import argparse
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml
from helpers import FAST_PIPELINE as FAST
from helpers import TINY_PRUNED_STRUCTURE as PRUNED
from helpers import tiny_model
from pyannote.audio import Model, Pipeline
from pyannote.audio.sample import SAMPLE_FILE

from pyannote_wavlm_prune import save_checkpoint
from pyannote_wavlm_prune.commands import export as export_command
from pyannote_wavlm_prune.commands.arguments import resolve_defaults
from pyannote_wavlm_prune.pipelines import (
    AudioDecodingError,
    SpeakerDiarization,
    estimate_plda,
    export_pipeline,
    load_pipeline,
)
from pyannote_wavlm_prune.pipelines.embedding_training import untrained_embedding
from pyannote_wavlm_prune.pipelines.export import read_pipeline_config

AGGLOMERATIVE = {
    "segmentation": {"min_duration_off": 0.0},
    "clustering": {"method": "centroid", "min_cluster_size": 2, "threshold": 0.7},
}


@pytest.fixture(scope="module")
def pruned():
    return tiny_model(duration=5.0, structure=PRUNED)


@pytest.fixture(scope="module")
def embedding():
    return untrained_embedding(dimension=32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, pruned, embedding):
    directory = tmp_path_factory.mktemp("export") / "pipeline"
    return export_pipeline(directory, pruned, embedding, params=AGGLOMERATIVE, **FAST)


def rttm(annotation) -> str:
    lines = []
    for segment, _, label in annotation.itertracks(yield_label=True):
        lines.append(f"{segment.start:.3f} {segment.duration:.3f} {label}")
    return "\n".join(lines)


def test_exported_pipeline_reloads_in_a_fresh_process_from_elsewhere_with_the_same_output(
    exported, pruned, embedding, tmp_path
):
    pipeline = SpeakerDiarization(segmentation=pruned, embedding=embedding, **FAST)
    expected = rttm(pipeline.instantiate(AGGLOMERATIVE)(SAMPLE_FILE["audio"]).speaker_diarization)
    assert expected.count("\n") + 1 >= 10  # a real diarization, not an empty one

    # moved to another place, loaded from a third one: nothing may depend on either path
    moved = tmp_path / "moved"
    shutil.copytree(exported, moved)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = textwrap.dedent(
        f"""
        from pyannote.audio import Pipeline
        pipeline = Pipeline.from_pretrained({str(moved)!r})
        print(type(pipeline).__module__, type(pipeline).__name__)
        output = pipeline({str(SAMPLE_FILE["audio"])!r})
        for segment, _, label in output.speaker_diarization.itertracks(yield_label=True):
            print(f"{{segment.start:.3f}} {{segment.duration:.3f}} {{label}}")
        """
    )
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYANNOTE_METRICS_ENABLED": "0"}
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=elsewhere, env=environment,
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    header, *lines = completed.stdout.strip().splitlines()
    assert header == "pyannote_wavlm_prune.pipelines.speaker_diarization SpeakerDiarization"
    assert "\n".join(lines) == expected


def test_a_config_naming_the_class_s_former_module_loads_the_same_pipeline(exported, tmp_path):
    # the class lived in pipelines/offline.py: a config.yaml (or a pickle) naming that path
    # builds the same class, with the same settings and hyper-parameters
    moved = shutil.copytree(exported, tmp_path / "former")
    config = yaml.safe_load((moved / "config.yaml").read_text())
    config["pipeline"]["name"] = "pyannote_wavlm_prune.pipelines.offline.SpeakerDiarization"
    (moved / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    former, current = Pipeline.from_pretrained(moved), Pipeline.from_pretrained(exported)
    assert type(former) is SpeakerDiarization
    assert former.settings == current.settings
    assert former.parameters(instantiated=True) == current.parameters(instantiated=True)
    assert former.parameters(instantiated=True)["clustering"]["threshold"] == 0.7


def test_config_names_our_class_and_subfolders_of_its_own_directory(exported):
    config = read_pipeline_config(exported)
    assert config["pipeline"]["name"] == "pyannote_wavlm_prune.pipelines.SpeakerDiarization"
    params = config["pipeline"]["params"]
    assert params["segmentation"] == "$model/segmentation"
    assert params["embedding"] == "$model/embedding"
    assert params["clustering"] == "AgglomerativeClustering"
    assert params["segmentation_step"] == 1.0
    assert config["params"] == AGGLOMERATIVE
    assert set(config["dependencies"]) == {"pyannote.audio", "pyannote-wavlm-prune"}
    names = sorted(p.name for p in exported.iterdir())
    assert names == ["config.yaml", "embedding", "segmentation"]


def test_exported_config_runs_32_chunks_per_batch_as_pyannote_hub_pipelines(tmp_path, pruned,
                                                                              embedding):
    # pyannote's class defaults to 1 chunk per forward pass: slow, and not what its hub
    # pipelines (speaker-diarization-3.1, community-1) write
    directory = export_pipeline(tmp_path / "pipeline", pruned, embedding, params=AGGLOMERATIVE)
    params = read_pipeline_config(directory)["pipeline"]["params"]
    assert params["segmentation_batch_size"] == params["embedding_batch_size"] == 32
    pipeline = Pipeline.from_pretrained(directory)
    assert pipeline.segmentation_batch_size == pipeline.embedding_batch_size == 32
    # and the command writes the same by default
    parser = argparse.ArgumentParser()
    export_command.add_arguments(parser)
    args = resolve_defaults(parser.parse_args(["--output", "x", "--segmentation", "s.ckpt"]))
    assert args.segmentation_batch_size == args.embedding_batch_size == 32


def test_exported_pipeline_gives_both_outputs_and_diarizes_a_list_of_files(exported):
    # pyannote 4's conventions: a DiarizeOutput with the exclusive diarization beside the
    # full one, and a list of files in one call giving (file, output) pairs
    pipeline = Pipeline.from_pretrained(exported)
    single = pipeline(SAMPLE_FILE["audio"])
    files = [{"uri": "first", "audio": SAMPLE_FILE["audio"]},
             {"uri": "second", "audio": SAMPLE_FILE["audio"]}]
    pairs = list(pipeline(files))
    assert [file["uri"] for file, _ in pairs] == ["first", "second"]
    for _, output in pairs:
        diarization = output.speaker_diarization
        exclusive = output.exclusive_speaker_diarization
        assert rttm(diarization) == rttm(single.speaker_diarization)
        assert rttm(exclusive) == rttm(single.exclusive_speaker_diarization)
        assert len(diarization) > 0 and len(exclusive) > 0
        # exclusive: at most one speaker at a time, covering what the full one covers
        assert exclusive.get_overlap().duration() == 0.0
        assert exclusive.get_timeline().support().duration() == pytest.approx(
            diarization.get_timeline().support().duration(), abs=0.1)


def test_exported_segmentation_is_the_pruned_model(exported, pruned):
    reloaded = Model.from_pretrained(exported / "segmentation" / "pytorch_model.bin").eval()
    assert reloaded.structure.to_dict() == PRUNED
    count = sum(p.numel() for p in pruned.parameters())
    assert sum(p.numel() for p in reloaded.parameters()) == count
    waveforms = torch.randn(1, 1, 16000)
    with torch.inference_mode():  # same weights, same process, same arithmetic: exact
        assert torch.equal(reloaded(waveforms), pruned(waveforms))


def test_load_pipeline_can_score_the_segmentation_alone_with_oracle_clustering(exported):
    pipeline = load_pipeline(exported, clustering="OracleClustering", segmentation_step=0.5)
    assert pipeline.klustering == "OracleClustering"
    assert pipeline.segmentation_step == 0.5
    assert pipeline.embedding is None  # embedding and clustering parameters are dropped
    assert pipeline.parameters(instantiated=True) == {
        "segmentation": {"min_duration_off": 0.0}, "clustering": {},
    }


def test_export_accepts_checkpoint_paths_and_writes_the_plda_for_vbx(tmp_path, pruned, embedding):
    segmentation = save_checkpoint(pruned, tmp_path / "segmentation.ckpt")
    save_checkpoint(embedding, tmp_path / "embedding" / "pytorch_model.bin")
    plda = estimate_plda(
        torch.randn(60, 32).numpy() + torch.arange(6).repeat_interleave(10)[:, None].numpy(),
        [f"speaker{i // 10}" for i in range(60)],
    )
    directory = export_pipeline(
        tmp_path / "vbx", segmentation, tmp_path / "embedding", plda=plda,
        clustering="VBxClustering", **FAST,
    )
    names = sorted(p.name for p in (directory / "plda").iterdir())
    assert names == ["plda.npz", "xvec_transform.npz"]
    pipeline = Pipeline.from_pretrained(directory)
    assert pipeline.klustering == "VBxClustering"
    assert pipeline.parameters(instantiated=True)["clustering"] == {
        "threshold": 0.6, "Fa": 0.07, "Fb": 0.8,
    }
    assert len(pipeline._plda.phi) == plda.dimension == 5


def test_export_refuses_a_non_empty_directory_unless_asked(tmp_path, pruned):
    directory = tmp_path / "pipeline"
    directory.mkdir()
    (directory / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        export_pipeline(directory, pruned, clustering="OracleClustering")
    assert sorted(p.name for p in directory.iterdir()) == ["notes.txt"]

    # overwrite replaces only what export wrote (issue 15): never the user's notes
    with pytest.raises(FileExistsError, match="not a pipeline directory written by"):
        export_pipeline(directory, pruned, clustering="OracleClustering", overwrite=True)
    assert sorted(p.name for p in directory.iterdir()) == ["notes.txt"]

    (directory / "notes.txt").unlink()
    export_pipeline(directory, pruned, clustering="OracleClustering")
    export_pipeline(directory, pruned, clustering="OracleClustering", overwrite=True)
    assert sorted(p.name for p in directory.iterdir()) == ["config.yaml", "segmentation"]
    # written beside, then renamed: no temporary directory is left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipeline"]


def test_export_with_unknown_parameters_writes_nothing(tmp_path, pruned):
    with pytest.raises(ValueError, match=r"params.clustering.thresold is not a hyper-parameter "
                                         r"\(did you mean 'threshold'\?\)"):
        export_pipeline(
            tmp_path / "pipeline", pruned, clustering="OracleClustering",
            params={"segmentation": {"min_duration_off": 0.0}, "clustering": {"thresold": 1}},
        )
    assert list(tmp_path.iterdir()) == []


def test_export_command_trains_an_embedding_and_estimates_a_plda_offline(tiny_protocol, tmp_path):
    # the offline recipe for VBx: embedding and PLDA both learnt from the project's own data
    segmentation = save_checkpoint(tiny_model(duration=5.0), tmp_path / "segmentation.ckpt")
    parser = argparse.ArgumentParser()
    export_command.add_arguments(parser)
    database = next(iter(tiny_protocol.preprocessors["audio"].registry.configs))
    args = parser.parse_args([
        "--output", str(tmp_path / "vbx"), "--segmentation", str(segmentation),
        "--clustering", "VBxClustering", "--protocol", tiny_protocol.name,
        "--database", str(database), "--train-embedding", "--embedding-epochs", "1",
        "--embedding-batches", "1",
        "--embedding-dimension", "32", "--estimate-plda",
    ])
    assert export_command.run(args) == 0

    speakers = sorted({s for f in tiny_protocol.train() for s in f["annotation"].labels()})
    embedding = Model.from_pretrained(tmp_path / "vbx" / "embedding" / "pytorch_model.bin")
    assert embedding.specifications.classes == speakers
    assert embedding.dimension == 32
    pipeline = Pipeline.from_pretrained(tmp_path / "vbx")
    assert pipeline.klustering == "VBxClustering"
    assert len(pipeline._plda.phi) == len(speakers) - 1


def test_export_refuses_a_model_that_no_task_has_specified(tmp_path, pruned):
    from pyannote.audio.models.embedding import XVectorMFCC

    with pytest.raises(ValueError, match="embedding model XVectorMFCC has no specifications"):
        export_pipeline(tmp_path / "pipeline", pruned, XVectorMFCC())
    assert list(tmp_path.iterdir()) == []


# --- clear errors ------------------------------------------------------------------------


def test_a_directory_without_config_yaml_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path} has no config.yaml"):
        load_pipeline(tmp_path)


def test_a_config_naming_a_missing_checkpoint_is_named(exported, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    (broken / "segmentation" / "pytorch_model.bin").unlink()
    missing = broken / "segmentation" / "pytorch_model.bin"
    message = f"segmentation checkpoint {missing} does not exist"
    with pytest.raises(FileNotFoundError, match=message):
        Pipeline.from_pretrained(broken)


def test_a_config_naming_a_missing_subfolder_is_named(exported, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    config = yaml.safe_load((broken / "config.yaml").read_text())
    config["pipeline"]["params"]["embedding"] = "$model/speaker-embedding"
    (broken / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(FileNotFoundError, match="speaker-embedding/pytorch_model.bin does not"):
        Pipeline.from_pretrained(broken)


def test_an_audio_file_that_cannot_be_decoded_is_named(exported, tmp_path):
    pipeline = Pipeline.from_pretrained(exported)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(bytes(range(256)) * 20)
    with pytest.raises(AudioDecodingError, match=f"Cannot decode audio file {garbage}"):
        pipeline(garbage)


def test_audio_shorter_than_one_frame_is_refused_with_its_duration(exported):
    pipeline = Pipeline.from_pretrained(exported)
    short = {"waveform": torch.zeros(1, 100), "sample_rate": 16000, "uri": "click"}
    with pytest.raises(ValueError, match=r"'click' lasts 0.0063 s: .* at least 0.0250 s"):
        pipeline(short)
