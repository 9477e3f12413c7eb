"""DistillPrune: a gated student learns to match a frozen teacher at a target sparsity."""

import copy

import lightning
import pytest
import torch
from helpers import TINY_PRUNED_STRUCTURE, tiny_model

from pyannote_wavlm_prune import attach_gates, prune, save_checkpoint
from pyannote_wavlm_prune.frontends.cost import (
    expected_macs,
    expected_params,
)
from pyannote_wavlm_prune.frontends.gates import HardConcreteGate
from pyannote_wavlm_prune.frontends.structure import Structure
from pyannote_wavlm_prune.recipe.averaging import KeepBestCheckpoints
from pyannote_wavlm_prune.recipe.callbacks import StopAtTargetSparsity
from pyannote_wavlm_prune.recipe.training import trainer
from pyannote_wavlm_prune.tasks import DistillPrune
from pyannote_wavlm_prune.tasks.distill_prune import Lagrangian

# fast enough to reach a target in a couple hundred steps of a tiny model
FAST = {"student": 2e-3, "gates": 0.1, "lagrangian": 0.2}


def teacher(duration: float = 2.0):
    return tiny_model(duration=duration)


def distill_prune(protocol, tmp_path, **kwargs):
    options = dict(teacher=teacher(), batch_size=4, cache=tmp_path / "cache.npz", validate=False,
                   learning_rate=FAST)
    options.update(kwargs)
    return DistillPrune(protocol, **options)


def gate_parameters(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for n, p in model.frontend.named_parameters() if "gates" in n])


@pytest.mark.parametrize("objective", ["params", "macs"])
def test_distill_prune_reaches_its_target_sparsity(tiny_protocol, tmp_path, objective):
    lightning.seed_everything(0)
    task = distill_prune(tiny_protocol, tmp_path, teacher=teacher(duration=0.5), batch_size=2,
                         sparsity=0.5, objective=objective, warmup_steps=100,
                         learning_rate={"student": 2e-3, "gates": 0.3, "lagrangian": 0.05})
    student = task.student()
    stop = StopAtTargetSparsity(tolerance=0.02, patience=10)
    trainer(max_steps=500, progress=False, callbacks=[stop]).fit(student)
    # it got there (rather than running out of steps) and stayed there
    assert student.global_step < 500
    student.eval()
    reached = task.expected_sparsity().item()
    assert abs(reached - 0.5) <= 0.02, reached

    pruned = prune(student)
    config = pruned.frontend.config
    if objective == "params":
        real = 1 - expected_params(pruned.frontend) / Structure.full(config).params()
    else:
        samples = task.num_samples
        real = 1 - expected_macs(pruned.frontend, samples) / Structure.full(config).macs(samples)
    assert abs(real - 0.5) <= 0.03, real


def test_stop_at_target_on_the_pruned_structure_stops_once_pruning_would_reach_it(tiny_protocol, tmp_path):
    lightning.seed_everything(0)
    task = distill_prune(tiny_protocol, tmp_path, teacher=teacher(duration=0.5), batch_size=2,
                         sparsity=0.5, warmup_steps=20,
                         learning_rate={"student": 2e-3, "gates": 0.3, "lagrangian": 0.05})
    student = task.student()
    stop = StopAtTargetSparsity(tolerance=0.02, patience=1, measure="pruned")
    trainer(max_steps=500, progress=False, callbacks=[stop]).fit(student)
    assert 20 <= student.global_step < 500
    reached = task.pruned_sparsity()
    assert reached >= 0.48
    # what was measured is what pruning makes
    pruned = prune(student.eval())
    config = pruned.frontend.config
    real = 1 - Structure.from_dict(pruned.structure, config).params() / Structure.full(config).params()
    assert real == pytest.approx(reached, abs=1e-12)
    assert real == pytest.approx(1 - sum(p.numel() for p in pruned.frontend.parameters())
                                 / Structure.full(config).params(), abs=1e-12)


def test_stop_at_target_refuses_an_unknown_measure():
    with pytest.raises(ValueError, match="measure='exact': expected one of"):
        StopAtTargetSparsity(measure="exact")


def test_pruned_sparsity_counts_the_structure_of_the_eval_mode_gates(tmp_path, tiny_protocol):
    task = distill_prune(tiny_protocol, tmp_path, sparsity=0.5, objective="macs")
    student = task.student()
    task.model = student
    with torch.no_grad():
        for group in student.frontend.gates.values():
            for gate in group:
                gate.log_alpha.fill_(10.0)  # every unit open
    assert task.pruned_sparsity() == pytest.approx(0.0, abs=1e-12)
    with torch.no_grad():
        for gate in student.frontend.gates["ffn"]:
            gate.log_alpha.fill_(-10.0)  # every FFN unit closed
    config = student.frontend.config
    structure = {**Structure.full(config).to_dict(), "ffn_widths": [0] * config.num_hidden_layers}
    expected = 1 - Structure.from_dict(structure, config).macs(task.num_samples) / Structure.full(config).macs(task.num_samples)
    assert task.pruned_sparsity() == pytest.approx(expected, abs=1e-12)
    assert task.pruned_sparsity("params") == pytest.approx(
        1 - Structure.from_dict(structure, config).params() / Structure.full(config).params(), abs=1e-12)


def test_teacher_is_untouched_and_outside_the_student(tiny_protocol, tmp_path):
    model = teacher()
    before = copy.deepcopy(model.state_dict())
    task = distill_prune(tiny_protocol, tmp_path, teacher=model, sparsity=0.3, warmup_steps=5,
                         controller="lagrangian")
    student = task.student()
    fit = trainer(max_steps=10, default_root_dir=tmp_path, progress=False)
    fit.fit(student)

    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name  # untouched: not even rounded
    teacher_ids = {id(p) for p in task.teacher.parameters()}
    optimized = [p for group in fit.optimizers[0].param_groups for p in group["params"]]
    assert not teacher_ids & {id(p) for p in optimized}
    assert not teacher_ids & {id(p) for p in student.parameters()}
    save_checkpoint(student, tmp_path / "student.ckpt")
    saved = torch.load(tmp_path / "student.ckpt", weights_only=False)["state_dict"]
    # the student's own WavLM + back end + gates + multipliers, nothing more
    assert set(saved) == set(student.state_dict())
    assert not any("teacher" in name for name in saved)
    assert {"loss_func.lambda1", "loss_func.lambda2"} <= set(saved)


def test_multipliers_are_trained_by_ascent(tiny_protocol, tmp_path):
    task = distill_prune(tiny_protocol, tmp_path, sparsity=0.5, warmup_steps=0,
                         controller="lagrangian")
    student = task.student()
    trainer(max_steps=5, default_root_dir=tmp_path, progress=False).fit(student)
    # expected sparsity is below the target: ascent on lambda1 (s - t) makes lambda1 negative
    assert student.loss_func.lambda1.item() < 0.0


def test_the_lagrangian_controller_brings_a_differentiable_sparsity_to_its_target():
    """The controller alone: 64 hard-concrete gates, a loss that pays for each closed unit
    (unit i costs importance[i]), the Lagrangian of the expected sparsity's gap to 0.5 and
    the optimizer groups the task uses (gates descend, multipliers ascend)."""
    torch.manual_seed(0)
    gates = HardConcreteGate(64)
    lagrangian = Lagrangian()
    importance = torch.linspace(0.1, 1.0, 64)
    optimizer = torch.optim.AdamW([
        {"params": gates.parameters(), "lr": FAST["gates"], "weight_decay": 0.0},
        lagrangian.parameter_group(FAST["lagrangian"]),
    ])
    sparsities = []
    for _ in range(400):  # a few ms each
        sparsity = 1 - gates.expected_l0() / 64
        closed = 1 - gates.open_probability()
        loss = (importance * closed).mean() + lagrangian(sparsity - 0.5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sparsities.append(sparsity.item())
    # it swings past the target first (measured 0.93 at step 80), then settles: over the last
    # 100 steps within 0.005 of 0.5, a third of one unit (1/64; measured 0.499 to 0.500)
    assert max(sparsities) > 0.6
    assert all(abs(value - 0.5) <= 0.005 for value in sparsities[-100:]), sparsities[-100:]
    # lambda1 settles on the price of the constraint: the importance of the units at the
    # boundary (units 31 and 32 of 64: 0.543 and 0.557; measured -0.542)
    price = -lagrangian.lambda1.item()
    assert importance[31].item() - 0.01 <= price <= importance[32].item() + 0.01, price


def test_penalty_returns_what_the_step_logs_and_changes_nothing(tiny_protocol, tmp_path):
    task = distill_prune(tiny_protocol, tmp_path, sparsity=0.5, warmup_steps=0,
                         controller="lagrangian")
    student = task.student()
    task.model = student  # what the student's setup does when Lightning starts
    with torch.no_grad():
        student.loss_func.lambda1.fill_(0.25)
        student.loss_func.lambda2.fill_(2.0)
    penalty, point = task.penalty()
    gap = task.expected_sparsity().item() - 0.5
    assert penalty.item() == pytest.approx(0.25 * gap + 2.0 * gap**2, rel=1e-5)
    assert point["step"] == 0 and point["target"] == 0.5
    assert (point["lambda1"], point["lambda2"]) == (0.25, 2.0)
    assert point["expected_params"] == pytest.approx(gap + 0.5, abs=1e-6)
    # nothing logged nor recorded: that is the training step's (outside a trainer, logging
    # would have failed)
    assert getattr(task, "trajectory_point", None) is None
    assert task.penalty()[1] == point


def test_target_rises_linearly_during_warm_up_then_stays(tiny_protocol, tmp_path):
    task = distill_prune(tiny_protocol, tmp_path, sparsity=0.8, warmup_steps=100)
    assert [task.target_sparsity(step) for step in (0, 50, 100, 500)] == pytest.approx([0, 0.4, 0.8, 0.8])


def pruned_teacher():
    """A tiny pruned model (about half of the tiny architecture), as a teacher."""
    return tiny_model(structure=TINY_PRUNED_STRUCTURE)


def test_a_pruned_teacher_s_targets_count_from_the_unpruned_architecture(tiny_protocol, tmp_path):
    model = pruned_teacher()
    already = model.structure.sparsity()
    assert 0.4 < already < 0.6
    task = distill_prune(tiny_protocol, tmp_path, teacher=model, sparsity=0.8, warmup_steps=100)
    assert task.initial_sparsity == pytest.approx(already, abs=1e-12)
    # the warm-up starts where the teacher is, not at 0
    assert [task.target_sparsity(step) for step in (0, 50, 100, 500)] == pytest.approx(
        [already, (already + 0.8) / 2, 0.8, 0.8])
    # the student's gates sit on the teacher's kept units: all open, the teacher's sparsity
    student = task.student()
    task.model = student
    with torch.no_grad():
        for group in student.frontend.gates.values():
            for gate in group:
                gate.log_alpha.fill_(10.0)
    assert student.frontend.gates["head"][0].num_units == len(TINY_PRUNED_STRUCTURE["kept_heads"][0])
    assert task.pruned_sparsity() == pytest.approx(already, abs=1e-12)


def test_a_target_below_a_pruned_teacher_s_sparsity_is_refused(tiny_protocol, tmp_path):
    with pytest.raises(ValueError, match=r"sparsity=0.3: the teacher is already pruned to a "
                                         r"params sparsity of 0\.\d{4}"):
        distill_prune(tiny_protocol, tmp_path, teacher=pruned_teacher(), sparsity=0.3)


def test_a_gated_teacher_is_refused(tiny_protocol, tmp_path):
    gated = attach_gates(tiny_model(), units=("head",))
    with pytest.raises(ValueError, match=r"teacher carries gates on \['head'\]"):
        distill_prune(tiny_protocol, tmp_path, teacher=gated)


@pytest.mark.parametrize("controller", ["projection", "lagrangian"])
def test_interrupted_run_resumes_as_if_uninterrupted(tiny_protocol, tmp_path, controller):
    steps = 6

    def run(directory, max_epochs, ckpt_path=None):
        lightning.seed_everything(0)
        task = distill_prune(tiny_protocol, tmp_path, sparsity=0.5, warmup_steps=4,
                             controller=controller)
        student = task.student()
        callback = KeepBestCheckpoints(directory, monitor="none", k=1)
        fit = trainer(max_epochs=max_epochs, limit_train_batches=steps, default_root_dir=directory,
                      progress=False, callbacks=[callback])
        fit.fit(student, ckpt_path=ckpt_path, weights_only=False)
        return student

    uninterrupted = run(tmp_path / "a", max_epochs=2)
    run(tmp_path / "b", max_epochs=1)
    resumed = run(tmp_path / "b", max_epochs=2, ckpt_path=tmp_path / "b" / "last.ckpt")
    assert resumed.global_step == uninterrupted.global_step == 2 * steps
    # every tensor restored exactly and the same batches replayed: the same arithmetic, exact
    assert torch.equal(gate_parameters(resumed), gate_parameters(uninterrupted))
    if controller == "lagrangian":
        assert resumed.loss_func.lambda1.item() == uninterrupted.loss_func.lambda1.item()


def test_a_teacher_that_is_not_a_wavlm_segmentation_is_refused(tiny_protocol):
    from pyannote.audio.models.segmentation import PyanNet

    with pytest.raises(ValueError, match="teacher is a PyanNet: expected a WavLMSegmentation"):
        DistillPrune(tiny_protocol, teacher=PyanNet())


@pytest.mark.parametrize("sparsity", [1.0, -0.1, 0.0])
def test_a_target_outside_zero_one_is_refused(tiny_protocol, sparsity):
    # 0 too: the gates start half open, so a target of 0 still removed units (issue 15)
    with pytest.raises(ValueError, match=rf"sparsity={sparsity}: expected a target in \(0, 1\); "
                                         "for no pruning, use train"):
        DistillPrune(tiny_protocol, teacher=teacher(), sparsity=sparsity)


def test_an_unknown_objective_is_refused(tiny_protocol):
    with pytest.raises(ValueError, match="objective='flops': expected one of"):
        DistillPrune(tiny_protocol, teacher=teacher(), objective="flops")


def test_a_distilled_layer_out_of_range_is_refused(tiny_protocol):
    with pytest.raises(ValueError, match=r"distilled_layers=\[0, 3\]: expected hidden-state indices in \[0, 2\]"):
        DistillPrune(tiny_protocol, teacher=teacher(), distilled_layers=[0, 3])


def test_unknown_gated_units_are_refused(tiny_protocol):
    with pytest.raises(ValueError, match=r"units=\['neurons'\]: expected some of"):
        DistillPrune(tiny_protocol, teacher=teacher(), units=["neurons"])


def test_a_protocol_without_development_set_is_refused_when_validating(tiny_corpus, tmp_path):
    from pyannote_wavlm_prune.data.simulate import get_protocol

    # the tiny corpus, with its train subset only
    (tmp_path / "database.yml").write_text(
        f"Databases:\n  NoDev: {tiny_corpus}/audio/{{uri}}.wav\n"
        "Protocols:\n  NoDev:\n    SpeakerDiarization:\n      train_only:\n        scope: database\n"
        f"        train:\n          uri: {tiny_corpus}/lists/train.txt\n"
        f"          annotation: {tiny_corpus}/rttm/train.rttm\n"
        f"          annotated: {tiny_corpus}/uem/train.uem\n"
    )
    protocol = get_protocol(tmp_path)
    with pytest.raises(ValueError, match="NoDev.SpeakerDiarization.train_only has no development set"):
        DistillPrune(protocol, teacher=teacher(), validate=True)
    # without validation, it is fine
    DistillPrune(protocol, teacher=teacher(), validate=False, cache=tmp_path / "cache.npz")


DDP_SCRIPT = """
import sys
import lightning, torch
sys.path.insert(0, {tests!r})
from helpers import TINY_PRUNED_STRUCTURE, tiny_model
from pyannote_wavlm_prune.data.simulate import get_protocol
from pyannote_wavlm_prune.recipe.callbacks import StopAtTargetSparsity
from pyannote_wavlm_prune.tasks import DistillPrune
from pyannote_wavlm_prune.tasks.distill_prune import Lagrangian

lightning.seed_everything(0)
task = DistillPrune(get_protocol({corpus!r}), teacher=tiny_model(), sparsity=0.5, warmup_steps=2,
                    batch_size=2, cache={cache!r}, validate=False, controller="lagrangian",
                    learning_rate={{"student": 2e-3, "gates": 0.1, "lagrangian": 0.2}})
student = task.student()
trainer = lightning.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=4, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False,
                            num_sanity_val_steps=0, enable_model_summary=False)
trainer.fit(student)
gates = {{n: p.detach() for n, p in student.frontend.named_parameters() if "gates" in n}}
torch.save({{"gates": gates, "lagrangian": dict(student.loss_func.state_dict()),
            "step": student.global_step}}, {out!r} + f"/rank{{trainer.global_rank}}.pt")
"""


def test_ddp_ranks_end_with_identical_gates_and_multipliers(tiny_corpus, tmp_path):
    import pathlib
    import subprocess
    import sys

    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(tests=str(pathlib.Path(__file__).parent), corpus=str(tiny_corpus),
                                        cache=str(tmp_path / "cache.npz"), out=str(tmp_path)))
    # the package of this checkout, not whichever one the environment has installed
    env = {"HF_HUB_OFFLINE": "1", "PYANNOTE_METRICS_ENABLED": "0", "PATH": "/usr/bin:/bin",
           "MASTER_PORT": "29517", "PYTHONPATH": str(pathlib.Path(__file__).parents[1])}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    assert ranks[0]["step"] == ranks[1]["step"] == 4
    # exact: DDP gives every rank the same all-reduced gradients, and each applies the same
    # update to the same values (the same arithmetic on one machine)
    for name, tensor in ranks[0]["gates"].items():
        assert torch.equal(tensor, ranks[1]["gates"][name]), name
    for name, tensor in ranks[0]["lagrangian"].items():
        assert torch.equal(tensor, ranks[1]["lagrangian"][name]), name
    # and training moved them
    assert ranks[0]["lagrangian"]["lambda1"].item() != 0.0
