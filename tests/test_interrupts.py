"""SIGTERM and SIGINT through the command line: the signal's exit status, one line, no
temporary file left, and the same command, run again, resumes (kill -9: test_recipe.py).

Each interrupted command runs in a child process that stops at a known point (a training
step, the write of an epoch's last checkpoint, the write of a pipeline's checkpoint), says
so on stdout and waits there for the signal the test then sends: where the signal lands is
fixed, not a matter of timing.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_model
from pyannote.audio import Model

from pyannote_wavlm_prune import save_checkpoint

READY = "waiting for the signal"

CHILD = """
import sys, time
from pathlib import Path
import lightning
from pyannote_wavlm_prune import cli
from pyannote_wavlm_prune.models import checkpoint
from pyannote_wavlm_prune.recipe import averaging

DIRECTORY, EPOCH, WHERE = {directory!r}, {epoch!r}, {where!r}


def signalled(trainer):
    interrupts = sys.modules.get("pyannote_wavlm_prune.interrupts")
    if interrupts is not None:
        return interrupts.received() is not None
    # without pyannote_wavlm_prune.interrupts, only Lightning takes note of a SIGTERM
    return trainer is not None and trainer.received_sigterm


def wait_for_the_signal(trainer=None):
    print({ready!r}, flush=True)
    while not signalled(trainer):
        time.sleep(0.01)


def here(directory, trainer):
    return directory.name == DIRECTORY and trainer.current_epoch == EPOCH


if WHERE == "step":  # inside the epoch's second training step
    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if here(self.directory.parent, trainer) and batch_idx == 1:
            wait_for_the_signal(trainer)

    averaging.KeepBestCheckpoints.on_train_batch_end = on_train_batch_end
elif WHERE == "last.ckpt":  # the epoch's last.ckpt written, not yet renamed into place
    save = lightning.Trainer.save_checkpoint

    def save_then_wait(trainer, filepath, *args, **kwargs):
        save(trainer, filepath, *args, **kwargs)
        path = Path(filepath)
        if here(path.parent.parent, trainer) and path.name.startswith(".last.ckpt."):
            wait_for_the_signal(trainer)

    lightning.Trainer.save_checkpoint = save_then_wait
elif WHERE == "pipeline":  # writing a pipeline directory's segmentation checkpoint
    save_atomically = checkpoint.save_atomically

    def wait_then_save(obj, path):
        wait_for_the_signal()
        return save_atomically(obj, path)

    checkpoint.save_atomically = wait_then_save
# as the kill -9 test does: runs of one command start from the same random state
lightning.seed_everything(0, verbose=False)
sys.exit(cli.main({arguments!r}))
"""


def environment() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYANNOTE_METRICS_ENABLED": "0"}


def child_script(arguments, where=None, directory=None, epoch=None) -> str:
    return CHILD.format(directory=directory, epoch=epoch, where=where, ready=READY,
                        arguments=[str(argument) for argument in arguments])


def run_cli(arguments, cwd):
    """The command line run to its end (seeded as the interrupted runs are)."""
    return subprocess.run([sys.executable, "-c", child_script(arguments)], cwd=cwd,
                          env=environment(), capture_output=True, text=True, timeout=900)


def interrupt(arguments, signum, where, cwd, directory=None, epoch=None):
    """Run the command line in a child that waits at `where`, send it `signum` there;
    return (exit status, stderr)."""
    script = child_script(arguments, where, directory, epoch)
    with open(cwd / "stderr.txt", "w") as stderr:
        child = subprocess.Popen([sys.executable, "-c", script], cwd=cwd, env=environment(),
                                 stdout=subprocess.PIPE, stderr=stderr, text=True)
        try:
            for line in child.stdout:  # ends if the child exits without reaching `where`
                if line.strip() == READY:
                    child.send_signal(signum)
                    break
            child.stdout.read()
            status = child.wait(timeout=900)
        finally:
            if child.poll() is None:
                child.kill()
    return status, (cwd / "stderr.txt").read_text()


def temporary_files(directory: Path) -> list[str]:
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*")
                  if path.name.endswith((".tmp", ".old")))


def assert_stopped_by(signum, status, stderr, command):
    name = signal.Signals(signum).name
    assert status == 128 + signum, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == (
        f"pyannote-wavlm-prune {command}: interrupted by {name}: run the same command again "
        "to resume")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return save_checkpoint(tiny_model(), tmp_path_factory.mktemp("teacher") / "teacher.ckpt")


def prune_arguments(corpus, teacher, output):
    return ["prune", "--protocol", "tiny", "--database", corpus, "--teacher", teacher,
            "--output", output, "--sparsity", "0.5", "--warmup-epochs", "1", "--max-epochs", "2",
            "--limit-train-batches", "3", "--limit-val-batches", "1", "--batch-size", "4",
            "--duration", "2", "--k", "1", "--accelerator", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def uninterrupted(tiny_corpus, teacher, tmp_path_factory):
    """The structure an uninterrupted prune keeps."""
    directory = tmp_path_factory.mktemp("uninterrupted")
    whole = run_cli(prune_arguments(tiny_corpus, teacher, directory / "out"), cwd=directory)
    assert whole.returncode == 0, whole.stderr[-3000:]
    return Model.from_pretrained(directory / "out" / "pruned.ckpt").structure


@pytest.mark.parametrize("signum, where", [(signal.SIGTERM, "step"), (signal.SIGINT, "step"),
                                           (signal.SIGTERM, "last.ckpt")])
def test_a_prune_stopped_by_a_signal_exits_with_its_status_and_resumes_to_the_same_result(
        tiny_corpus, teacher, uninterrupted, tmp_path, signum, where):
    """Lightning makes a SIGTERM a SystemExit without code (exit status 0, no result) and a
    Ctrl-C `sys.exit(1)`; a signal inside an epoch's checkpoint writes waits for their end."""
    arguments = prune_arguments(tiny_corpus, teacher, tmp_path / "out")
    status, stderr = interrupt(arguments, signum, where, tmp_path, directory="out", epoch=1)
    assert_stopped_by(signum, status, stderr, "prune")
    assert not (tmp_path / "out" / "pruned.ckpt").exists()
    assert temporary_files(tmp_path) == []
    last = torch.load(tmp_path / "out" / "checkpoints" / "last.ckpt", weights_only=False)
    # stopped inside epoch 1: the last whole epoch is 0; inside its records: 1, whole
    assert last["epoch"] == (0 if where == "step" else 1)

    resumed = run_cli(arguments, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from checkpoints/last.ckpt (same options)" in resumed.stderr
    assert Model.from_pretrained(tmp_path / "out" / "pruned.ckpt").structure == uninterrupted


def test_a_recipe_stopped_by_sigterm_in_a_later_stage_resumes_there(tiny_corpus, teacher,
                                                                    tmp_path):
    budget = ("{max_epochs: 1, limit_train_batches: 3, limit_val_batches: 1, batch_size: 4, "
              "duration: 2.0, k: 1}")
    (tmp_path / "recipe.yml").write_text(
        f"protocol: tiny\ndatabase: {tiny_corpus}\nexperiment: exp\n"
        f"teacher: {{checkpoint: {teacher}}}\n"
        f"prune: {{sparsity: 0.5, warmup_epochs: 0, budget: {budget}}}\n"
        f"distill: {{budget: {budget}}}\nfinetune: {{budget: {budget}}}\n")
    arguments = ["recipe", tmp_path / "recipe.yml", "--no-progress"]
    status, stderr = interrupt(arguments, signal.SIGTERM, "step", tmp_path,
                               directory="3-distill", epoch=0)
    assert_stopped_by(signal.SIGTERM, status, stderr, "recipe")
    assert (tmp_path / "exp" / "2-prune" / "pruned.ckpt").is_file()
    assert not (tmp_path / "exp" / "3-distill" / "model.ckpt").exists()
    assert temporary_files(tmp_path) == []

    resumed = run_cli(arguments, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "2-prune: reusing pruned.ckpt (finished with the same options)" in resumed.stderr
    final = Model.from_pretrained(tmp_path / "exp" / "4-finetune" / "model.ckpt")
    assert final.structure == Model.from_pretrained(tmp_path / "exp" / "2-prune" / "pruned.ckpt").structure


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_an_export_stopped_by_a_signal_leaves_no_staging_directory_and_reruns(
        teacher, tmp_path, signum):
    arguments = ["export", "--segmentation", teacher, "--clustering", "OracleClustering",
                 "--output", tmp_path / "pipeline"]
    status, stderr = interrupt(arguments, signum, "pipeline", tmp_path)
    assert_stopped_by(signum, status, stderr, "export")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["stderr.txt"]

    again = run_cli(arguments, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "pipeline" / "config.yaml").is_file()


def test_a_signal_inside_an_uninterrupted_section_waits_for_its_end():
    from pyannote_wavlm_prune import interrupts

    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    done = []
    with pytest.raises(interrupts.Interrupted) as raised:
        with interrupts.stop_on_signals():
            with interrupts.uninterrupted():
                os.kill(os.getpid(), signal.SIGTERM)
                done.append("after the signal")
            done.append("after the section")
    assert done == ["after the signal"]
    assert raised.value.exit_status == 143
    # the handlers in place before are back
    assert {signum: signal.getsignal(signum) for signum in before} == before


def test_a_task_cache_write_cut_short_leaves_nothing_a_later_run_would_take_for_the_cache(
        tiny_protocol, tmp_path, monkeypatch):
    """pyannote writes the task's metadata cache in place and takes any non-empty file there
    for a finished one: a write cut short (a signal, a full disk) failed every later run."""
    import numpy as np

    from pyannote_wavlm_prune.recipe.training import diarization_task

    model = tiny_model()
    model.task = diarization_task(tiny_protocol, duration=2.0, batch_size=4, cache_dir=tmp_path)
    cache = model.task.cache
    savez = np.savez_compressed

    def cut_short(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", cut_short)
    with pytest.raises(OSError, match="(?i)no space left"):
        model.prepare_data()
    assert not cache.exists() and list(tmp_path.iterdir()) == []
    monkeypatch.setattr(np, "savez_compressed", savez)
    model.prepare_data()
    assert model.task.cache == cache
    assert str(np.load(cache, allow_pickle=True)["protocol"]) == tiny_protocol.name
