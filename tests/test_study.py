"""The paper's study: targets up to 99 %, module-wise and progressive pruning, data quantity, sweeps."""

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import tiny_model
from pyannote.audio import Model
from pyannote.audio.core.task import Subsets
from wavlm_helpers import layout_config

from pyannote_wavlm_prune import attach_gates, prune, save_checkpoint
from pyannote_wavlm_prune.data.protocols import training_subset
from pyannote_wavlm_prune.frontends.budget import masks_at_budget
from pyannote_wavlm_prune.frontends.cost import (
    module_sparsity,
    prunable_share,
    shift_gates_to_sparsity,
    smallest_sparsity,
)
from pyannote_wavlm_prune.frontends.gating import kept_structure
from pyannote_wavlm_prune.frontends.presets import base_plus_config
from pyannote_wavlm_prune.frontends.structure import Structure
from pyannote_wavlm_prune.recipe.stages import (
    Budget,
    distill_stage,
    progressive_prune_stage,
    prune_stage,
)
from pyannote_wavlm_prune.recipe.sweep import pareto_front
from pyannote_wavlm_prune.recipe.training import trainer
from pyannote_wavlm_prune.tasks import Distill, DistillPrune

# a few steps of a tiny model: enough to train gates, prune, average and reload
TINY_BUDGET = {"max_epochs": 1, "limit_train_batches": 3, "limit_val_batches": 1, "batch_size": 2,
               "k": 1}


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "teacher.ckpt"
    save_checkpoint(tiny_model(duration=0.5), path)
    return path


def test_the_highest_sparsity_keeps_a_channel_per_cnn_layer_and_what_no_unit_kind_prunes():
    units = ("conv", "head", "ffn")
    base_plus = Structure.full(base_plus_config())
    # the positional convolution (4.7 M) and the norms stay: 94.9 % of WavLM Base+ at most
    assert smallest_sparsity(base_plus, units) == pytest.approx(0.94933, abs=1e-5)
    assert smallest_sparsity(base_plus, units, "macs", 128_000) == pytest.approx(0.96774, abs=1e-5)
    smallest = Structure.from_dict({"conv_channels": [1] * 7, "kept_heads": [[]] * 12,
                                    "ffn_widths": [0] * 12}, base_plus.config)
    assert smallest_sparsity(base_plus, units) == pytest.approx(smallest.sparsity(), abs=1e-12)
    # heads only: the CNN and FFN stay whole
    assert smallest_sparsity(base_plus, ["head"]) == pytest.approx(Structure.from_dict(
        {**base_plus.to_dict(), "kept_heads": [[]] * 12}, base_plus.config).sparsity(), abs=1e-12)


@pytest.mark.parametrize("sparsity", [0.9, 0.95])
def test_pruning_beyond_what_the_architecture_allows_finishes_at_its_smallest_and_reloads(
        tiny_protocol, tiny_teacher, tmp_path, sparsity):
    directory = tmp_path / "prune"
    options = dict(sparsity=sparsity, warmup_steps=1, budget=Budget(**TINY_BUDGET), progress=False)
    output = prune_stage(tiny_protocol, directory, tiny_teacher, **options)
    pruned = Model.from_pretrained(output)
    structure = Structure.from_dict(pruned.structure, pruned.frontend.config)
    # the tiny WavLM's fixed parts (positional convolution, norms) are 15 % of it: 0.9 is out
    # of reach, and pruning stops at the smallest structure, one channel per CNN layer
    highest = smallest_sparsity(tiny_model().frontend, ("conv", "head", "ffn"))
    assert highest == pytest.approx(0.8523, abs=1e-4)
    macs = smallest_sparsity(tiny_model().frontend, ("conv", "head", "ffn"), "macs", 32_000)
    assert macs == pytest.approx(0.9798, abs=1e-4)
    assert structure.conv_channels == (1,) * 7
    assert structure.kept_heads == ((), ()) and structure.ffn_widths == (0, 0)
    assert structure.sparsity() == pytest.approx(highest, abs=1e-12)
    assert structure.params() == sum(p.numel() for p in pruned.frontend.parameters())
    # the trajectory records only what is defined (strict JSON), the reachable target
    points = json.loads((directory / "sparsity.json").read_text())
    assert points and all(math.isfinite(p["pruned"]) for p in points)
    assert points[-1]["target"] == pytest.approx(highest)
    report = json.loads((directory / "pruning.json").read_text())
    assert report["target"] == sparsity and report["reachable"] == pytest.approx(highest)
    # it computes (a constant, as nothing of the input survives one channel's scale)
    with torch.no_grad():
        assert torch.isfinite(pruned(torch.randn(1, 1, 8000))).all()
    # run again: the finished stage is what it returns, nothing retrained
    modified = output.stat().st_mtime_ns
    assert prune_stage(tiny_protocol, directory, tiny_teacher, **options) == output
    assert output.stat().st_mtime_ns == modified


@pytest.mark.parametrize("objective", ["params", "macs"])
@pytest.mark.parametrize("targets", [{"cnn": 0.4, "transformer": 0.7},
                                     {"cnn": 0.3, "heads": 0.5, "ffn": 0.8}])
def test_module_wise_targets_each_land_within_half_a_percent(tiny_protocol, tmp_path, objective,
                                                             targets):
    # 128 heads of 2 dimensions: one head is 0.8 % of the heads module (of the tiny model's 8,
    # 12.5 %: no budget of heads alone could be met within 0.5 %)
    wavlm = layout_config("base", num_hidden_layers=8, num_attention_heads=16)
    task = DistillPrune(tiny_protocol, teacher=tiny_model(duration=0.5, wavlm=wavlm),
                        sparsity=targets,
                        objective=objective, warmup_steps=2, batch_size=2, validate=False,
                        cache=tmp_path / "cache.npz")
    student = task.student()
    trainer(max_steps=3, progress=False).fit(student)
    # before each step, the projection puts each module's expected sparsity on its target
    task.before_step()
    samples = task.num_samples if objective == "macs" else None
    for module, target in targets.items():
        assert float(module_sparsity(student.frontend, module, objective, samples)) == \
            pytest.approx(target, abs=1e-6)
    pruned = prune(student.eval(), sparsity=task.reachable_sparsity)
    structure = Structure.from_dict(pruned.structure, pruned.frontend.config)
    for module, target in targets.items():
        assert abs(module_sparsity(structure, module, objective, samples) - target) <= 0.005
    # the combined sparsity is reported, and is the whole front end's: each module's weighted
    # by the share of the front end it holds (a sweep's module-wise cells aim at it so)
    report = pruned.budget_report
    assert report.sparsity == pytest.approx(structure.sparsity(objective, samples), abs=1e-12)
    config = structure.config
    assert report.sparsity == pytest.approx(sum(
        prunable_share(config, [module], objective, samples)
        * module_sparsity(structure, module, objective, samples) for module in targets), abs=1e-9)
    assert set(report.sparsity_after) == set(targets)


def test_a_share_of_the_training_files_is_the_same_files_on_every_run(tiny_protocol, tmp_path):
    everything = sorted(file["uri"] for file in tiny_protocol.train())
    assert len(everything) >= 4
    half = training_subset(tiny_protocol, 0.5, seed=0)
    # drawn, not the first ones listed; the same on every run; another seed, other files
    assert len(half.train_uris) == round(len(everything) / 2)
    assert sorted(file["uri"] for file in half.train()) == half.train_uris
    assert training_subset(tiny_protocol, 0.5, seed=0).train_uris == half.train_uris
    draws = {tuple(training_subset(tiny_protocol, 0.5, seed=seed).train_uris) for seed in range(5)}
    assert len(draws) > 1
    assert len(training_subset(tiny_protocol, 3).train_uris) == 3
    assert training_subset(tiny_protocol, 1.0).train_uris == everything
    # the protocol itself is untouched, and so are its other sets
    assert sorted(file["uri"] for file in tiny_protocol.train()) == everything
    assert [f["uri"] for f in half.development()] == [f["uri"] for f in tiny_protocol.development()]
    for bad in (0, 0.0, 1.5, -2, True, "half"):
        with pytest.raises(ValueError, match="train_files="):
            training_subset(tiny_protocol, bad)
    # the distillation tasks train on those files only
    task = Distill(tiny_protocol, teacher=tiny_model(duration=0.5), train_files=0.5,
                   batch_size=2, cache=tmp_path / "cache.npz")
    assert task.train_uris == half.train_uris
    task.prepare_data()
    task.setup()
    data = task.prepared_data
    train = data["audio-metadata"]["subset"] == Subsets.index("train")
    paths = sorted(Path(str(path)).stem for path in data["audio-path"][train])
    assert paths == half.train_uris


def test_a_progressive_schedule_equals_its_rounds_run_by_hand(tiny_protocol, tiny_teacher, tmp_path):
    budget = Budget(**TINY_BUDGET)
    distill = {"budget": TINY_BUDGET}
    options = dict(warmup_steps=1, budget=budget, progress=False)
    result = progressive_prune_stage(tiny_protocol, tmp_path / "progressive", tiny_teacher,
                                     schedule=[0.4, 0.6], distill=distill, **options)
    rounds = json.loads((tmp_path / "progressive" / "rounds.json").read_text())
    assert [r["target"] for r in rounds] == [0.4, 0.6]
    assert all(abs(r["sparsity"] - r["target"]) <= 0.005 for r in rounds)
    assert all(r["distillation_after_prune"] is not None for r in rounds)
    assert rounds[0]["distillation_after_distill"] is not None

    by_hand = tmp_path / "by-hand"
    first = prune_stage(tiny_protocol, by_hand / "1", tiny_teacher, sparsity=0.4, **options)
    distilled = distill_stage(tiny_protocol, by_hand / "2", tiny_teacher, first,
                              budget=Budget(**TINY_BUDGET), progress=False)
    second = prune_stage(tiny_protocol, by_hand / "3", tiny_teacher, student=distilled,
                         sparsity=0.6, **options)
    ours, theirs = Model.from_pretrained(result), Model.from_pretrained(second)
    assert ours.structure == theirs.structure
    assert rounds[1]["structure"] == theirs.structure.to_dict()
    mine, yours = ours.state_dict(), theirs.state_dict()
    assert mine.keys() == yours.keys()
    assert all(torch.equal(mine[key], yours[key]) for key in mine)
    # the second round started from the first's model: nothing it had removed came back
    first_structure = Model.from_pretrained(first).structure
    assert all(set(kept) <= set(before) for kept, before in
               zip(ours.structure.kept_heads, first_structure.kept_heads, strict=True))
    # a finished schedule is reused as it is
    modified = result.stat().st_mtime_ns
    assert progressive_prune_stage(tiny_protocol, tmp_path / "progressive", tiny_teacher,
                                   schedule=[0.4, 0.6], distill=distill, **options) == result
    assert result.stat().st_mtime_ns == modified


def _recipe_calls(tmp_path, monkeypatch, prune: str) -> dict:
    from pyannote_wavlm_prune.recipe import Recipe, run

    monkeypatch.chdir(tmp_path)
    (tmp_path / "teacher.ckpt").write_bytes(b"a teacher")
    (tmp_path / "recipe.yml").write_text(
        "protocol: P\nexperiment: out\nteacher: {checkpoint: teacher.ckpt}\n"
        f"prune: {prune}\ndistill: {{budget: {{max_epochs: 3}}}}\n")
    calls = {}

    def stage(name):
        def fake(*args, **kwargs):
            calls[name] = (args, kwargs)
            return tmp_path / name
        return fake

    monkeypatch.setattr(Recipe, "get_protocol", lambda self: None)
    for name in ("prune_stage", "progressive_prune_stage", "distill_stage", "finetune_stage"):
        monkeypatch.setattr(run, name, stage(name))
    Recipe.from_yaml(tmp_path / "recipe.yml").run(progress=False)
    return calls


def test_the_recipe_takes_module_wise_targets_a_schedule_and_a_share_of_the_data(tmp_path,
                                                                                 monkeypatch):
    calls = _recipe_calls(tmp_path, monkeypatch,
                          "{sparsity: {cnn: 0.5, transformer: 0.85}, train_files: 0.25}")
    assert calls["prune_stage"][1]["sparsity"] == {"cnn": 0.5, "transformer": 0.85}
    assert calls["prune_stage"][1]["train_files"] == 0.25
    calls = _recipe_calls(tmp_path, monkeypatch, "{schedule: [0.5, 0.8], objective: macs}")
    assert "prune_stage" not in calls
    args, kwargs = calls["progressive_prune_stage"]
    assert args[-1] == [0.5, 0.8] and kwargs["objective"] == "macs"
    assert kwargs["distill"]["budget"].max_epochs == 3
    # the final distillation reads the last round's pruned model
    assert calls["distill_stage"][0][3] == tmp_path / "progressive_prune_stage"
    for section, message in (("{schedule: [0.8, 0.5]}", r"schedule\[1\]=0.5"),
                           ("{schedule: [0.5], sparsity: 0.8}", "sparsity and schedule"),
                           ("{sparsity: {cnn: 0.5, heads: 0.5, transformer: 0.8}}", "share"),
                           ("{sparsity: {conv: 0.5}}", "unknown module"),
                           ("{sparsity: {cnn: 1.5}}", r"sparsity\['cnn'\]=1.5"),
                           ("{train_files: 0}", "train_files=0")):
        with pytest.raises(ValueError, match=message):
            _recipe_calls(tmp_path, monkeypatch, section)


def test_a_sweep_resumes_after_an_interruption_without_redoing_finished_cells(tmp_path, monkeypatch,
                                                                              tiny_teacher):
    from pyannote_wavlm_prune.recipe import Recipe, sweep

    (tmp_path / "recipe.yml").write_text(
        f"protocol: P\nexperiment: out\nteacher: {{checkpoint: {tiny_teacher}}}\n"
        "prune: {warmup_epochs: 1}\n"
        "sweep: {strategies: [overall, progressive], targets: [0.5, 0.8], der: false}\n")
    recipe = Recipe.from_yaml(tmp_path / "recipe.yml")
    monkeypatch.setattr(Recipe, "get_protocol", lambda self: None)
    ran, interrupt = [], {"after": 2}
    # made-up measurements: cells further pruned are faster, with a worse DER but one
    costs = {"overall-params-s50": (2.0, 10.0), "overall-params-s80": (1.0, 30.0),
             "progressive-params-s50": (2.0, 12.0), "progressive-params-s80": (1.0, 20.0)}

    def run_cell(recipe, cell, settings, protocol, teacher, embedding, directory, *rest):
        assert cell.prune_options(settings["rounds"]).get("schedule", [cell.target])[-1] == cell.target
        if len(ran) == interrupt["after"]:
            raise KeyboardInterrupt
        ran.append(cell.name)
        gmacs, der = costs[cell.name]
        return {"sparsity_params": cell.target, "sparsity_macs": cell.target, "wavlm_params": 10,
                "wavlm_gmacs_per_second": gmacs, "speedup": 4 / gmacs, "der_pipeline": der,
                "der_oracle": der}

    def measure(model, teacher, *rest):
        return {"sparsity_params": 0.0, "sparsity_macs": 0.0, "wavlm_params": 50,
                "wavlm_gmacs_per_second": 4.0, "speedup": 1.0, "der_pipeline": 9.0,
                "der_oracle": 9.0}

    monkeypatch.setattr(sweep, "_run_cell", run_cell)
    monkeypatch.setattr(sweep, "measure", measure)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(recipe, progress=False)
    assert ran == ["overall-params-s50", "overall-params-s80"]
    interrupt["after"] = None
    rows = sweep.run_sweep(recipe, progress=False)
    # the finished cells were read back, not run again
    assert ran == ["overall-params-s50", "overall-params-s80", "progressive-params-s50",
                   "progressive-params-s80"]
    assert [row["cell"] for row in rows] == ["teacher", *ran]
    root = tmp_path / "out"
    assert json.loads((root / "sweep.json").read_text())["rows"] == rows
    assert (root / "sweep.png").stat().st_size > 0
    # Pareto front of DER against MACs: the teacher, overall s50, progressive s80
    table = (root / "sweep.txt").read_text()
    bold = [line.split("|")[1].strip() for line in table.splitlines() if "**" in line]
    assert bold == ["**teacher**", "**overall-params-s50**", "**progressive-params-s80**"]


def test_the_pareto_front_keeps_what_nothing_beats_on_both_counts():
    points = [(1.0, 5.0), (2.0, 4.0), (2.0, 6.0), (3.0, 4.0), (0.5, 9.0), (1.0, 5.0)]
    assert pareto_front(points) == [True, True, False, False, True, True]


@pytest.mark.parametrize("objective", ["params", "macs"])
def test_a_budget_blocked_by_coarse_units_takes_one_past_it_and_comes_back_with_finer_ones(objective):
    # at 90 %, what the tiny transformer keeps is about a head per layer, 6 % of it: no head
    # fits the 0.5 % window, but one removed and a few FFN units restored do
    model = attach_gates(tiny_model())
    frontend = model.frontend
    samples = 8000 if objective == "macs" else None
    targets = {"cnn": 0.9, "transformer": 0.9}
    for module, target in targets.items():
        shift_gates_to_sparsity(frontend, frontend.config, target, objective, samples, module=module)
    masks, report = masks_at_budget(frontend, targets, objective, samples)
    assert report.sparsity_before["transformer"] < 0.895
    assert report.restored > 0
    structure = kept_structure(frontend, masks)
    for module, target in targets.items():
        assert abs(module_sparsity(structure, module, objective, samples) - target) <= 0.005


def test_the_study_example_is_the_paper_s_comparisons_in_eleven_cells(tmp_path, monkeypatch):
    from pyannote_wavlm_prune.cli import main
    from pyannote_wavlm_prune.recipe import Recipe
    from pyannote_wavlm_prune.recipe.sweep import check_sweep, sweep_cells

    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "--example", "study.yml"]) == 0
    recipe = Recipe.from_yaml("study.yml")
    cells = [cell.name for cell in sweep_cells(check_sweep(recipe.sweep))]
    assert cells == ["overall-params-s80", "module-wise-params-s80", "progressive-params-s80",
                     "overall-macs-s80", "overall-params-s80-d0.25", "overall-params-s80-d0.5",
                     "overall-params-s50", "overall-params-s60", "overall-params-s70",
                     "overall-params-s90", "overall-params-s95"]
    for section, message in (({"grids": [{"targets": [1.2]}]}, r"grids\[0\].targets: 1.2"),
                             ({"strategies": ["greedy"]}, "'greedy'"),
                             ({"grids": [{"sparsity": [0.5]}]}, "sparsity"),
                             ({"train_files": [0]}, "train_files=0")):
        with pytest.raises(ValueError, match=message):
            check_sweep(section)
