"""The recipe: fine-tune > DistillPrune > prune > distill > fine-tune, resumable, from the CLI."""

import json
import os
import subprocess
import sys

import pytest
import torch
from pyannote.audio import Model

from pyannote_wavlm_prune import WavLMSegmentation
from pyannote_wavlm_prune.recipe import Budget, Recipe, with_fresh_back_end
from pyannote_wavlm_prune.recipe.averaging import average_checkpoints, select_epochs

BUDGET = {"max_epochs": 1, "limit_train_batches": 3, "limit_val_batches": 2, "batch_size": 4,
          "duration": 2.0, "k": 1, "trainer": {"accelerator": "cpu"}}


def run_cli(*arguments, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYANNOTE_METRICS_ENABLED": "0"}
    return subprocess.run([sys.executable, "-m", "pyannote_wavlm_prune.cli", *arguments], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=900)


def test_select_epochs_keeps_the_k_best_after_the_peak():
    history = [{"epoch": e, "score": s} for e, s in enumerate([0.5, 0.9, 1.4, 1.1, 0.8, 0.85, 0.7])]
    assert [e["epoch"] for e in select_epochs(history, k=2, after_peak=True)] == [6, 4]
    assert [e["epoch"] for e in select_epochs(history, k=2, after_peak=False)] == [0, 6]


def test_select_epochs_averages_only_students_that_reached_the_target_sparsity():
    sparsity = [0.1, 0.5, 0.79, 0.81, 0.85, 0.80]
    history = [{"epoch": e, "score": s, "sparsity": p}
               for e, (s, p) in enumerate(zip([-3.5, -3.6, -3.3, -3.4, -3.45, -3.2], sparsity))]
    # epochs 0 and 1 have the best scores, but are barely pruned
    chosen = select_epochs(history, k=2, after_peak=False, minimum=("sparsity", 0.8))
    assert [e["epoch"] for e in chosen] == [4, 3]
    # none reached it: the sparsest alone
    chosen = select_epochs(history, k=2, after_peak=False, minimum=("sparsity", 0.9))
    assert [e["epoch"] for e in chosen] == [4]
    # entries without the measure (NaN) are never eligible
    history[4]["sparsity"] = float("nan")
    chosen = select_epochs(history, k=3, after_peak=False, minimum=("sparsity", 0.8))
    assert [e["epoch"] for e in chosen] == [3, 5]


def test_averaging_two_checkpoints_averages_their_weights(tmp_path):
    from helpers import tiny_model

    from pyannote_wavlm_prune import save_checkpoint

    first, second = tiny_model(), tiny_model()
    save_checkpoint(first, tmp_path / "a.ckpt")
    save_checkpoint(second, tmp_path / "b.ckpt")
    average = Model.from_pretrained(average_checkpoints([tmp_path / "a.ckpt", tmp_path / "b.ckpt"],
                                                         tmp_path / "average.ckpt"))
    name = "frontend.wavlm.encoder.layers.0.feed_forward.intermediate_dense.weight"
    expected = (first.state_dict()[name] + second.state_dict()[name]) / 2
    # averaged in float64, then rounded: within one float32 ulp of float32's (a + b) / 2
    assert torch.allclose(average.state_dict()[name], expected,
                          rtol=torch.finfo(torch.float32).eps, atol=0.0)
    # inputs untouched
    assert torch.equal(Model.from_pretrained(tmp_path / "a.ckpt").state_dict()[name], first.state_dict()[name])


def test_averaging_checkpoints_of_different_structures_is_refused(tmp_path):
    from helpers import TINY_BACKEND, powerset_specifications

    from pyannote_wavlm_prune import save_checkpoint
    from pyannote_wavlm_prune.frontends.presets import tiny_config

    models = []
    for width in (64, 32):
        structure = {"conv_channels": [32] * 7, "kept_heads": [[0, 1, 2, 3]] * 2, "ffn_widths": [width, 64]}
        model = WavLMSegmentation(wavlm=tiny_config(), structure=structure, **TINY_BACKEND)
        model.specifications = powerset_specifications()
        model.build()
        models.append(model)
    save_checkpoint(models[0], tmp_path / "a.ckpt")
    save_checkpoint(models[1], tmp_path / "b.ckpt")
    with pytest.raises(ValueError, match="different structures"):
        average_checkpoints([tmp_path / "a.ckpt", tmp_path / "b.ckpt"], tmp_path / "average.ckpt")


def test_fresh_back_end_keeps_wavlm_and_reinitialises_the_rest():
    from helpers import tiny_model

    model = tiny_model()
    fresh = with_fresh_back_end(model)
    for name, tensor in model.frontend.state_dict().items():
        assert torch.equal(fresh.frontend.state_dict()[name], tensor)
    assert not torch.equal(fresh.projection.weight, model.projection.weight)


def test_unknown_budget_option_is_refused():
    with pytest.raises(ValueError, match=r"budget has unknown keys \['epochs'\] \(did you mean "
                                         r"'max_epochs'\?\)"):
        Budget.from_dict({"epochs": 3})


def test_recipe_without_protocol_is_refused(tmp_path):
    (tmp_path / "recipe.yml").write_text("experiment: out\n")
    with pytest.raises(ValueError, match="needs a 'protocol' key"):
        Recipe.from_yaml(tmp_path / "recipe.yml")


def test_recipe_passes_finetune_learning_rates_to_its_stage(tmp_path, monkeypatch):
    from pyannote_wavlm_prune.recipe import run

    monkeypatch.chdir(tmp_path)  # teacher.checkpoint is read from the working directory
    (tmp_path / "teacher.ckpt").write_bytes(b"a teacher")  # a missing one is refused at once
    (tmp_path / "recipe.yml").write_text(
        "protocol: P\nexperiment: out\nteacher: {checkpoint: teacher.ckpt}\n"
        "finetune: {learning_rate: {wavlm: 2.0e-5}, fresh_back_end: false}\n")
    calls = {}

    def stage(name):
        def fake(*args, **kwargs):
            calls[name] = kwargs
            return tmp_path / name
        return fake

    monkeypatch.setattr(Recipe, "get_protocol", lambda self: None)
    for name in ("prune_stage", "distill_stage", "finetune_stage"):
        monkeypatch.setattr(run, name, stage(name))
    Recipe.from_yaml(tmp_path / "recipe.yml").run(progress=False)
    assert calls["finetune_stage"]["learning_rate"] == {"wavlm": 2e-5}
    assert calls["finetune_stage"]["fresh_back_end"] is False


def test_averaging_takes_the_largest_batchnorm_counter(tmp_path):
    from helpers import tiny_model

    from pyannote_wavlm_prune import save_checkpoint

    first, second = tiny_model(), tiny_model()
    counters = [name for name in first.state_dict() if name.endswith("num_batches_tracked")]
    assert counters  # the Conformer's convolution module has a BatchNorm
    with torch.no_grad():
        second.get_buffer(counters[0]).fill_(7)
    save_checkpoint(first, tmp_path / "a.ckpt")
    save_checkpoint(second, tmp_path / "b.ckpt")
    average_checkpoints([tmp_path / "a.ckpt", tmp_path / "b.ckpt"], tmp_path / "average.ckpt")
    state = torch.load(tmp_path / "average.ckpt", weights_only=False)["state_dict"]
    assert state[counters[0]].item() == 7


# one optimizer step per stage
ONE_STEP = Budget(max_epochs=1, limit_train_batches=1, limit_val_batches=1, batch_size=4, duration=2.0,
                  k=1, trainer={"accelerator": "cpu"})


@pytest.fixture(scope="module")
def trained(tiny_protocol, tmp_path_factory):
    """A model trained on this protocol (its classifier fits the protocol's powerset), shared
    by the fine-tuning tests, each of which checks that it leaves it untouched."""
    from helpers import TINY_BACKEND

    from pyannote_wavlm_prune.frontends.presets import tiny_config
    from pyannote_wavlm_prune.recipe import train_stage

    return train_stage(tiny_protocol, tmp_path_factory.mktemp("trained"), budget=ONE_STEP,
                       progress=False, model_options={"wavlm": tiny_config(), **TINY_BACKEND})


@pytest.mark.parametrize("fresh", [True, False])
def test_finetuning_keeps_the_distilled_back_end_only_when_asked(tiny_protocol, tmp_path, fresh,
                                                                 trained):
    from pyannote_wavlm_prune.recipe import finetune_stage

    model = Model.from_pretrained(trained)
    tuned = Model.from_pretrained(finetune_stage(tiny_protocol, tmp_path / "finetune", trained,
                                                 budget=ONE_STEP, fresh_back_end=fresh,
                                                 progress=False))
    # one AdamW step moves a weight by about the learning rate (1e-3); a fresh one is elsewhere
    change = (tuned.classifier.weight - model.classifier.weight).abs().max().item()
    assert (change > 0.05) if fresh else (change < 0.005), change
    # the input checkpoint is untouched
    reloaded = Model.from_pretrained(trained)
    assert torch.equal(reloaded.classifier.weight, model.classifier.weight)


def test_finetuning_learning_rates_replace_the_model_s_own(tiny_protocol, tmp_path, trained):
    from pyannote_wavlm_prune.recipe import finetune_stage

    model = Model.from_pretrained(trained)
    # backend 0: the back end does not move (the model's own 1e-3 moved it, test above);
    # wavlm keeps the model's own
    tuned = Model.from_pretrained(finetune_stage(
        tiny_protocol, tmp_path / "finetune", trained, budget=ONE_STEP, fresh_back_end=False,
        progress=False, learning_rate={"backend": 0.0}))
    assert torch.equal(tuned.classifier.weight, model.classifier.weight)
    assert tuned.hparams.learning_rate == {**model.hparams.learning_rate, "backend": 0.0}
    with pytest.raises(ValueError, match=r"learning_rate has unknown keys \['student'\]"):
        finetune_stage(tiny_protocol, tmp_path / "other", trained, budget=ONE_STEP,
                       progress=False, learning_rate={"student": 1e-3})


PRUNE_SCRIPT = """
import os, signal, sys
import lightning
from pyannote_wavlm_prune.data.protocols import get_protocol
from pyannote_wavlm_prune.recipe import averaging
from pyannote_wavlm_prune.recipe.stages import Budget, prune_stage

kill_after = {kill_after!r}
if kill_after is not None:
    # kill -9 right after the epoch's checkpoints are written, as a crash would
    save = averaging.KeepBestCheckpoints._on_epoch_end

    def save_then_die(self, trainer):
        save(self, trainer)
        if trainer.current_epoch == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    averaging.KeepBestCheckpoints._on_epoch_end = save_then_die
lightning.seed_everything(0)
prune_stage(get_protocol({corpus!r}), {directory!r}, {teacher!r}, progress=False,
            budget=Budget(**{budget!r}), sparsity=0.5, warmup_epochs=1,
            task_options={{"learning_rate": {{"student": 2e-3, "gates": 0.3, "lagrangian": 0.05}}}})
"""


def prune_in_a_process(corpus, directory, teacher, kill_after=None, **options):
    script = PRUNE_SCRIPT.format(kill_after=kill_after,
                                 corpus=str(corpus), directory=str(directory), teacher=str(teacher),
                                 budget={**BUDGET, "max_epochs": 3, **options})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYANNOTE_METRICS_ENABLED": "0"}
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=900)


def test_a_prune_killed_and_resumed_ends_as_an_uninterrupted_one_with_whole_records(
        tiny_corpus, tmp_path):
    import hashlib

    from helpers import tiny_model

    from pyannote_wavlm_prune import save_checkpoint

    teacher = save_checkpoint(tiny_model(), tmp_path / "teacher.ckpt")
    digest = hashlib.sha256(teacher.read_bytes()).hexdigest()
    whole = prune_in_a_process(tiny_corpus, tmp_path / "whole", teacher)
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = prune_in_a_process(tiny_corpus, tmp_path / "resumed", teacher, kill_after=1)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not (tmp_path / "resumed" / "pruned.ckpt").exists()
    resumed = prune_in_a_process(tiny_corpus, tmp_path / "resumed", teacher)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from checkpoints/last.ckpt (same options)" in resumed.stderr

    structures = [Model.from_pretrained(tmp_path / run / "pruned.ckpt").structure
                  for run in ("whole", "resumed")]
    assert structures[0] is not None and structures[0] == structures[1]
    assert hashlib.sha256(teacher.read_bytes()).hexdigest() == digest

    def refuse(constant):
        raise ValueError(f"history.json holds {constant}")

    for run in ("whole", "resumed"):
        history = json.loads((tmp_path / run / "checkpoints" / "history.json").read_text(),
                             parse_constant=refuse)
        assert [entry["epoch"] for entry in history["history"]] == [0, 1, 2]
        assert all(entry["score"] is not None for entry in history["history"])
    # the metrics of the epochs before the kill are still there, beside those after it
    logged = set()
    for metrics in (tmp_path / "resumed" / "logs").glob("*/metrics.csv"):
        rows = metrics.read_text().splitlines()
        column = rows[0].split(",").index("epoch")
        logged |= {int(float(row.split(",")[column])) for row in rows[1:] if row.split(",")[column]}
    assert logged == {0, 1, 2}


def test_a_prune_rerun_with_other_options_stops_and_keeps_the_result(tiny_corpus, tmp_path):
    from helpers import tiny_model

    from pyannote_wavlm_prune import save_checkpoint

    teacher = save_checkpoint(tiny_model(), tmp_path / "teacher.ckpt")
    output = tmp_path / "2-prune"
    common = ("prune", "--protocol", "tiny", "--database", str(tiny_corpus), "--teacher",
              str(teacher), "--output", str(output), "--max-epochs", "1", "--limit-train-batches",
              "2", "--limit-val-batches", "1", "--batch-size", "4", "--duration", "2", "--k", "1",
              "--accelerator", "cpu", "--no-progress", "--warmup-epochs", "0")
    first = run_cli(*common, "--sparsity", "0.5", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    pruned = (output / "pruned.ckpt").read_bytes()

    same = run_cli(*common, "--sparsity", "0.5", cwd=tmp_path)
    assert same.returncode == 0 and "reusing pruned.ckpt (finished with the same options)" in same.stderr
    changed = run_cli(*common, "--sparsity", "0.3", "--objective", "macs", cwd=tmp_path)
    assert changed.returncode == 2 and "Traceback" not in changed.stderr
    assert "task.sparsity: 0.5 -> 0.3" in changed.stderr
    assert 'task.objective: "params" -> "macs"' in changed.stderr
    assert (output / "pruned.ckpt").read_bytes() == pruned

    restarted = run_cli(*common, "--sparsity", "0.3", "--restart", cwd=tmp_path)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert json.loads((output / "options.json").read_text())["task"]["sparsity"] == 0.3
    assert (output / "pruned.ckpt").read_bytes() != pruned
