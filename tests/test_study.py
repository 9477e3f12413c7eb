"""The paper's study: targets up to 99 %, module-wise and progressive pruning, data quantity, sweeps."""

import json
import math

import pytest
import torch
from helpers import tiny_model
from pyannote.audio import Model

from pyannote_wavlm_prune import save_checkpoint
from pyannote_wavlm_prune.recipe.stages import Budget, prune_stage
from pyannote_wavlm_prune.wavlm.cost import smallest_sparsity
from pyannote_wavlm_prune.wavlm.structure import Structure

# a few steps of a tiny model: enough to train gates, prune, average and reload
TINY_BUDGET = {"max_epochs": 1, "limit_train_batches": 3, "limit_val_batches": 1, "batch_size": 2,
               "k": 1}


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "teacher.ckpt"
    save_checkpoint(tiny_model(duration=0.5), path)
    return path


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
