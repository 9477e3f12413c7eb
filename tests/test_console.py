"""A quiet command line: the project's progress and results; the libraries' notices with --debug."""

import logging
import os
import re
import subprocess
import sys
import warnings

import pytest

from pyannote_wavlm_prune import console
from pyannote_wavlm_prune.recipe.training import StageProgressBar

# what Lightning, its dependencies and pyannote print on every training run
NOISE = ("GPU available", "litlogger", "Warning", "warnings.warn", "`Trainer.fit` stopped",
         "DiarizationErrorRate/")


def train(tiny_corpus, output, *extra) -> str:
    """What `train` prints (stdout and stderr) for one tiny epoch of 2 steps and 1 validation."""
    command = [sys.executable, "-m", "pyannote_wavlm_prune.cli", *extra, "train",
               "--protocol", "Simulated.SpeakerDiarization.tiny",
               "--database", str(tiny_corpus / "database.yml"), "--output", str(output),
               "--wavlm", "preset:tiny", "--max-epochs", "1", "--limit-train-batches", "2",
               "--limit-val-batches", "1", "--duration", "2", "--batch-size", "2"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": ""}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def outputs(tiny_corpus, tmp_path_factory):
    """What a training command prints, quiet (the default) and with --debug."""
    root = tmp_path_factory.mktemp("console")
    return {"quiet": train(tiny_corpus, root / "quiet"),
            "debug": train(tiny_corpus, root / "debug", "--debug")}


def test_a_training_command_shows_its_progress_and_none_of_the_libraries_notices(outputs):
    for noise in NOISE:
        assert noise not in outputs["quiet"], noise
    # the bar, and the metric it is selected on, whole
    assert re.search(r"epoch 1/1: 100%.*2/2.*DiarizationErrorRate=[0-9.]+", outputs["quiet"])
    assert outputs["quiet"].rstrip().endswith("model.ckpt")


def test_debug_shows_the_libraries_messages_and_every_metric_component(outputs):
    assert "GPU available" in outputs["debug"]
    assert "DiarizationErrorRate/Miss=" in outputs["debug"]


def test_the_metrics_components_hide_only_beside_their_metric():
    metrics = {"DiarizationErrorRate": 0.5, "DiarizationErrorRate/Miss": 0.1, "loss/train": 0.25}
    bar = StageProgressBar(columns=1000)
    assert bar.metrics_text(metrics) == (
        "DiarizationErrorRate=0.5, DiarizationErrorRate/Miss=0.1, loss/train=0.25")
    with console.quiet():
        # "loss/train" has no "loss" metric beside it: it is a metric of its own
        assert bar.metrics_text(metrics) == "DiarizationErrorRate=0.5, loss/train=0.25"


def test_quiet_keeps_this_package_s_warnings_and_restores_everything_after():
    logger = logging.getLogger("lightning.pytorch.quiet-test")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with console.quiet():
            assert not logger.isEnabledFor(logging.INFO) and not console.details()
            warnings.warn("a library's notice", DeprecationWarning, stacklevel=1)
            # as this package's modules warn: attributed to a module of the package
            exec(compile("import warnings\nwarnings.warn('act on this', UserWarning)",
                         "pyannote_wavlm_prune/x.py", "exec"), {"__name__": "pyannote_wavlm_prune.x"})
        assert console.details()
        logger.setLevel(logging.INFO)
        assert logger.isEnabledFor(logging.INFO)
    assert [str(w.message) for w in caught] == ["act on this"]
