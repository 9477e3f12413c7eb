"""Nothing lost, nothing silently wrong (issue 15): guarded outputs, one-line CLI errors,
strict records, modes that follow the umask."""

import hashlib
import json
import math
import os
import subprocess
import sys
import textwrap
import threading
import wave
from types import SimpleNamespace

import pytest
from helpers import FAST_PIPELINE as FAST
from helpers import TINY_PRUNED_STRUCTURE as PRUNED
from helpers import tiny_model
from pyannote.audio import Pipeline

from pyannote_wavlm_prune import save_checkpoint
from pyannote_wavlm_prune.files import write_atomically, write_json_atomically
from pyannote_wavlm_prune.pipelines import export as export_module
from pyannote_wavlm_prune.pipelines import export_pipeline
from pyannote_wavlm_prune.pipelines.embedding_training import untrained_embedding
from pyannote_wavlm_prune.recipe.averaging import KeepBestCheckpoints, average_checkpoints
from pyannote_wavlm_prune.recipe.record import OptionsChangedError, begin_stage
from pyannote_wavlm_prune.recipe.training import trainer
from pyannote_wavlm_prune.tasks import DistillPrune

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGGLOMERATIVE = {
    "segmentation": {"min_duration_off": 0.0},
    "clustering": {"method": "centroid", "min_cluster_size": 2, "threshold": 0.7},
}


def sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def tree(directory) -> dict[str, str]:
    """Every file under `directory` (relative path -> sha256)."""
    return {str(p.relative_to(directory)): sha256(p) for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def pruned():
    return tiny_model(duration=5.0, structure=PRUNED)


@pytest.fixture(scope="module")
def segmentation_file(tmp_path_factory, pruned):
    return save_checkpoint(pruned, tmp_path_factory.mktemp("models") / "pruned.ckpt")


# ---------------------------------------------------------------- 1. stage options

def test_a_rerun_with_other_options_lists_the_differences_and_keeps_the_result(tmp_path):
    result = tmp_path / "pruned.ckpt"
    assert not begin_stage(tmp_path, "prune", {"task": {"sparsity": 0.8, "objective": "params"}}, result)
    result.write_bytes(b"the pruned model")
    with pytest.raises(OptionsChangedError) as error:
        begin_stage(tmp_path, "prune", {"task": {"sparsity": 0.3, "objective": "macs"}}, result)
    assert "task.sparsity: 0.8 -> 0.3" in str(error.value)
    assert 'task.objective: "params" -> "macs"' in str(error.value)
    assert "--restart" in str(error.value)
    assert result.read_bytes() == b"the pruned model"
    assert json.loads((tmp_path / "options.json").read_text())["task"]["sparsity"] == 0.8


def test_a_rerun_with_the_same_options_says_it_reuses_or_resumes(tmp_path, caplog):
    options = {"task": {"sparsity": 0.8}, "budget": {"max_epochs": 3}}
    begin_stage(tmp_path, "prune", options, tmp_path / "pruned.ckpt")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"state")
    caplog.clear()
    assert not begin_stage(tmp_path, "prune", options, tmp_path / "pruned.ckpt")
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path}: resuming from checkpoints/last.ckpt (same options)"]
    (tmp_path / "pruned.ckpt").write_bytes(b"done")
    caplog.clear()
    assert begin_stage(tmp_path, "prune", options, tmp_path / "pruned.ckpt")
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path}: reusing pruned.ckpt (finished with the same options)"]


def test_restart_removes_only_what_the_stage_wrote(tmp_path):
    begin_stage(tmp_path, "prune", {"sparsity": 0.8}, tmp_path / "pruned.ckpt")
    for name in ("pruned.ckpt", "student.ckpt", "sparsity.json", "checkpoints/last.ckpt",
                 "logs/version_0/metrics.csv", "notes.txt", "teacher.ckpt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    assert not begin_stage(tmp_path, "prune", {"sparsity": 0.3}, tmp_path / "pruned.ckpt",
                           restart=True, inputs=[tmp_path / "teacher.ckpt"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "options.json", "teacher.ckpt"]
    assert json.loads((tmp_path / "options.json").read_text())["sparsity"] == 0.3


def test_restart_never_removes_an_input(tmp_path):
    begin_stage(tmp_path, "train", {"epochs": 1}, tmp_path / "model.ckpt")
    (tmp_path / "model.ckpt").write_text("the teacher")
    with pytest.raises(ValueError, match="an input of this stage"):
        begin_stage(tmp_path, "finetune", {"epochs": 2}, tmp_path / "model.ckpt", restart=True,
                    inputs=[tmp_path / "model.ckpt"])
    assert (tmp_path / "model.ckpt").read_text() == "the teacher"


def test_restart_changed_keeps_a_run_whose_options_are_the_same(tmp_path):
    begin_stage(tmp_path, "distill", {"k": 1}, tmp_path / "model.ckpt")
    (tmp_path / "model.ckpt").write_text("done")
    assert begin_stage(tmp_path, "distill", {"k": 1}, tmp_path / "model.ckpt", restart="changed")
    assert not begin_stage(tmp_path, "distill", {"k": 2}, tmp_path / "model.ckpt", restart="changed")
    assert not (tmp_path / "model.ckpt").exists()


def test_a_record_alone_from_a_start_that_failed_does_not_block_the_next_one(tmp_path):
    begin_stage(tmp_path, "prune", {"sparsity": 1.5}, tmp_path / "pruned.ckpt")  # then refused
    assert not begin_stage(tmp_path, "prune", {"sparsity": 0.5}, tmp_path / "pruned.ckpt")
    assert json.loads((tmp_path / "options.json").read_text())["sparsity"] == 0.5


def test_results_without_a_record_of_their_options_are_not_reused(tmp_path):
    (tmp_path / "pruned.ckpt").write_text("made with unknown options")
    with pytest.raises(OptionsChangedError, match="no options.json"):
        begin_stage(tmp_path, "prune", {"sparsity": 0.5}, tmp_path / "pruned.ckpt")


# ---------------------------------------------------------------- 2. export --overwrite

def test_export_refuses_the_working_directory_even_with_overwrite(tmp_path, monkeypatch, pruned):
    (tmp_path / "thesis.tex").write_text("years of work")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="is or contains the working directory"):
        export_pipeline(".", pruned, clustering="OracleClustering", overwrite=True)
    with pytest.raises(ValueError, match="is or contains the working directory"):
        export_pipeline(tmp_path.parent, pruned, clustering="OracleClustering", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]


def test_export_refuses_a_directory_holding_its_segmentation_checkpoint(tmp_path, pruned):
    experiment = tmp_path / "exp"
    segmentation = save_checkpoint(pruned, experiment / "2-prune" / "pruned.ckpt")
    before = tree(experiment)
    with pytest.raises(ValueError, match=r"is or contains segmentation .*pruned.ckpt"):
        export_pipeline(experiment, segmentation, clustering="OracleClustering", overwrite=True)
    assert tree(experiment) == before


def test_overwrite_replaces_a_pipeline_directory_but_not_a_file(tmp_path, pruned):
    target = tmp_path / "pipeline"
    target.write_text("not a pipeline")
    with pytest.raises(FileExistsError, match="not a pipeline directory written by"):
        export_pipeline(target, pruned, clustering="OracleClustering", overwrite=True)
    assert target.read_text() == "not a pipeline"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipeline"]  # no .pipeline.XXXX.old


def test_overwrite_refuses_a_pipeline_directory_with_files_export_did_not_write(tmp_path, pruned):
    target = export_pipeline(tmp_path / "pipeline", pruned, clustering="OracleClustering")
    (target / "segmentation" / "my-notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="it holds segmentation/my-notes.txt"):
        export_pipeline(target, pruned, clustering="OracleClustering", overwrite=True)
    assert (target / "segmentation" / "my-notes.txt").read_text() == "keep me"


def test_concurrent_exports_to_one_new_directory_one_succeeds_one_fails(tmp_path, pruned, monkeypatch):
    # both exports pass the early check and write their staging directory before either
    # places it: the race of two commands started at once, made certain
    ready = threading.Barrier(2, timeout=60)
    give_default_modes = export_module.give_default_modes

    def wait_for_the_other(staging):
        give_default_modes(staging)
        ready.wait()

    monkeypatch.setattr(export_module, "give_default_modes", wait_for_the_other)
    target = tmp_path / "pipeline"
    outcomes = {}

    def export(name, step):
        try:
            export_pipeline(target, pruned, clustering="OracleClustering", segmentation_step=step)
            outcomes[name] = "written"
        except FileExistsError as error:
            outcomes[name] = str(error)

    threads = [threading.Thread(target=export, args=(name, step))
               for name, step in (("first", 0.25), ("second", 0.5))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes.values())[-1] == "written"
    assert "exists (another writer may just have written it)" in sorted(outcomes.values())[0]
    winner = next(name for name, outcome in outcomes.items() if outcome == "written")
    step = export_module.read_pipeline_config(target)["pipeline"]["params"]["segmentation_step"]
    assert step == {"first": 0.25, "second": 0.5}[winner]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipeline"]


def test_a_tuned_pipeline_never_replaces_the_pipeline_it_tunes(tmp_path, pruned):
    from pyannote_wavlm_prune.pipelines.optimize import optimize_pipeline

    directory = export_pipeline(tmp_path / "pipeline", pruned, clustering="OracleClustering")
    before = tree(directory)
    with pytest.raises(ValueError, match="is or contains the pipeline to tune"):
        optimize_pipeline(directory, [], output=directory, overwrite=True)
    assert tree(directory) == before


def test_averaging_into_one_of_its_inputs_is_refused(tmp_path, pruned):
    checkpoint = save_checkpoint(pruned, tmp_path / "epoch=1.ckpt")
    before = sha256(checkpoint)
    with pytest.raises(ValueError, match="is or contains a checkpoint to average"):
        average_checkpoints([checkpoint, checkpoint], checkpoint)
    assert sha256(checkpoint) == before


# ---------------------------------------------------------------- 3. empty audio

def write_wav(path, samples: int):
    with wave.open(str(path), "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(16000)
        file.writeframes(b"\0\0" * samples)
    return path


@pytest.mark.parametrize("samples", [0, 100])
def test_empty_or_too_short_audio_files_are_named(tmp_path, pruned, samples):
    directory = export_pipeline(tmp_path / "pipeline", pruned, untrained_embedding(dimension=32),
                                params=AGGLOMERATIVE, **FAST)
    pipeline = Pipeline.from_pretrained(directory)
    audio = write_wav(tmp_path / f"{samples}-samples.wav", samples)
    with pytest.raises(ValueError, match=f"{audio}") as error:
        pipeline({"audio": audio, "uri": "meeting"})
    assert "one frame" in str(error.value)
    assert not isinstance(error.value, TypeError)


# ---------------------------------------------------------------- 4. the command line

def run_cli(*arguments, cwd, env=None):
    """The CLI in a fresh process: (exit code, stderr, whether torch was imported)."""
    script = textwrap.dedent(f"""
        import sys
        from pyannote_wavlm_prune.cli import main
        try:
            code = main({list(arguments)!r})
        finally:
            print("torch imported:", "torch" in sys.modules, file=sys.stderr)
        sys.exit(code)
    """)
    environment = {key: value for key, value in os.environ.items()
                   if key != "PYANNOTE_WAVLM_PRUNE_DEBUG"}
    environment.update({"PYTHONPATH": ROOT, "HF_HUB_OFFLINE": "1", **(env or {})})
    done = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=600)
    lines = done.stderr.strip().splitlines()
    return done.returncode, "\n".join(lines[:-1]), lines[-1] == "torch imported: True"


@pytest.fixture
def database(tmp_path):
    (tmp_path / "database.yml").write_text(textwrap.dedent("""
        Protocols:
          Simulated:
            SpeakerDiarization:
              tiny:
                train: {uri: lists/train.txt}
    """))
    return tmp_path / "database.yml"


def test_an_unknown_protocol_is_one_line_naming_it_and_the_known_ones(tmp_path, database):
    code, stderr, torch_imported = run_cli(
        "prune", "--protocol", "Simulated.SpeakerDiarization.nope", "--database", str(database),
        "--teacher", str(database), "--output", "out", cwd=tmp_path)
    assert code == 2
    assert stderr.count("\n") == 0 and "Traceback" not in stderr
    assert "'Simulated.SpeakerDiarization.nope'" in stderr
    assert "expected one of ['Simulated.SpeakerDiarization.tiny']" in stderr
    assert stderr.startswith("pyannote-wavlm-prune prune: error: ")
    assert not torch_imported


def test_a_missing_teacher_is_named_before_torch_is_imported(tmp_path, database):
    code, stderr, torch_imported = run_cli(
        "prune", "--protocol", "tiny", "--database", str(database), "--teacher", "teacher.ckpt",
        "--output", "out", cwd=tmp_path)
    assert (code, stderr) == (2, "pyannote-wavlm-prune prune: error: --teacher teacher.ckpt does "
                                 "not exist: expected the path of an existing file or directory.")
    assert not torch_imported


def test_debug_shows_the_traceback(tmp_path, database):
    arguments = ("prune", "--protocol", "tiny", "--database", str(database), "--teacher",
                 "teacher.ckpt", "--output", "out")
    code, stderr, _ = run_cli(*arguments, "--debug", cwd=tmp_path)
    assert code == 1 and "Traceback" in stderr and "FileNotFoundError" in stderr
    code, stderr, _ = run_cli(*arguments, cwd=tmp_path, env={"PYANNOTE_WAVLM_PRUNE_DEBUG": "1"})
    assert code == 1 and "Traceback" in stderr


def test_an_embedding_given_as_segmentation_is_named_as_such(tmp_path):
    embedding = save_checkpoint(untrained_embedding(dimension=32), tmp_path / "embedding.ckpt")
    code, stderr, _ = run_cli("export", "--output", "pipeline", "--segmentation", str(embedding),
                              "--embedding", str(embedding), cwd=tmp_path)
    assert code == 2 and "Traceback" not in stderr
    assert stderr.splitlines()[-1] == (
        f"pyannote-wavlm-prune export: error: segmentation {embedding} is a XVectorMFCC trained "
        "for representation: expected a segmentation model (e.g. a WavLMSegmentation checkpoint).")
    assert not (tmp_path / "pipeline").exists()


# ---------------------------------------------------------------- 5. records

def test_history_is_strict_json_with_null_for_an_epoch_without_score(tmp_path):
    callback = KeepBestCheckpoints(tmp_path, monitor="loss/val", k=1, minimum=("sparsity", 0.5))
    # what Lightning hands the callback at the end of an epoch that logged nothing
    fit = SimpleNamespace(sanity_checking=False, callback_metrics={}, current_epoch=0, global_step=3,
                          is_global_zero=True, strategy=SimpleNamespace(barrier=lambda: None),
                          save_checkpoint=lambda path, weights_only: path.write_bytes(b"state"))
    callback.on_train_epoch_end(fit, None)

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    history = json.loads((tmp_path / "history.json").read_text(), parse_constant=refuse)
    assert history["history"][0]["score"] is None and history["history"][0]["sparsity"] is None
    assert math.isinf(callback.history[0]["score"])  # selection still sees the worst score


def test_each_run_in_a_directory_keeps_its_own_metrics_file(tmp_path):
    first = trainer(max_epochs=1, default_root_dir=tmp_path, progress=False).logger
    first.log_metrics({"loss": 1.0}, step=0)
    first.save()
    second = trainer(max_epochs=1, default_root_dir=tmp_path, progress=False).logger
    second.log_metrics({"loss": 0.5}, step=1)
    second.save()
    files = sorted(tmp_path.glob("logs/*/metrics.csv"))
    assert [f.read_text().splitlines()[1] for f in files] == ["1.0,0", "0.5,1"]


# ---------------------------------------------------------------- 6. modes

def test_outputs_follow_the_umask(tmp_path, pruned):
    previous = os.umask(0o022)
    try:
        checkpoint = save_checkpoint(pruned, tmp_path / "model.ckpt")
        average = average_checkpoints([checkpoint, checkpoint], tmp_path / "average.ckpt")
        record = write_json_atomically(tmp_path / "history.json", {"epochs": 1})
        figure = write_atomically(tmp_path / "figure.png", lambda file: file.write(b"png"))
        os.umask(0o027)
        private = save_checkpoint(pruned, tmp_path / "private.ckpt")
    finally:
        os.umask(previous)
    assert {path.name: oct(path.stat().st_mode & 0o777)
            for path in (checkpoint, average, record, figure, private)} == {
        "model.ckpt": "0o644", "average.ckpt": "0o644", "history.json": "0o644",
        "figure.png": "0o644", "private.ckpt": "0o640"}


# ---------------------------------------------------------------- 7. sparsity 0

def test_a_target_sparsity_of_zero_is_refused_before_anything_is_loaded():
    with pytest.raises(ValueError, match=r"sparsity=0.0: expected a target in \(0, 1\); for no "
                                         r"pruning, use train"):
        DistillPrune(None, teacher=None, sparsity=0.0)


def test_export_onnx_never_replaces_its_checkpoint_even_with_overwrite(tmp_path, capsys):
    from pyannote_wavlm_prune.cli import main

    checkpoint = save_checkpoint(tiny_model(), tmp_path / "v.ckpt")
    before = sha256(checkpoint)
    assert main(["export-onnx", str(checkpoint), "--output", str(checkpoint), "--overwrite"]) == 2
    assert "is or contains the checkpoint" in capsys.readouterr().err
    assert sha256(checkpoint) == before


def test_import_diarizen_never_writes_into_the_repository_it_reads(tmp_path, capsys):
    from pyannote_wavlm_prune.cli import main

    hub = tmp_path / "diarizen-wavlm-base-s80-md"
    hub.mkdir()
    (hub / "config.toml").write_text("[model]\n")
    listing = sorted(p.name for p in hub.iterdir())
    assert main(["import-diarizen", str(hub), "--output", str(hub / "pipeline")]) == 2
    assert "lies inside the DiariZen repository" in capsys.readouterr().err
    assert sorted(p.name for p in hub.iterdir()) == listing
