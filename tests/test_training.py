"""WavLMSegmentation trains with pyannote's own SpeakerDiarization task."""

import re

import lightning
import torch
from helpers import TINY_BACKEND
from pyannote.audio.utils.loss import nll_loss
from pyannote.audio.utils.permutation import permutate

from pyannote_wavlm_prune import WavLMSegmentation
from pyannote_wavlm_prune.frontends.presets import tiny_config
from pyannote_wavlm_prune.recipe.training import (
    StageProgressBar,
    diarization_task,
    task_cache_path,
    trainer,
)


def fixed_batches(task, num_batches: int = 4):
    """The same training batches every call (the task's chunk sampler is seeded per epoch)."""
    iterator = iter(task.train_dataloader())
    return [next(iterator) for _ in range(num_batches)]


def mean_loss(model, batches) -> float:
    """pyannote's permutation-invariant powerset loss, as its SpeakerDiarization task computes it."""
    model.eval()
    losses = []
    with torch.no_grad():
        for batch in batches:
            prediction = model(batch["X"])
            permutated, _ = permutate(model.powerset.to_multilabel(prediction), batch["y"])
            target = model.powerset.to_powerset(permutated.float()).argmax(dim=-1)
            losses.append(nll_loss(prediction, target).item())
    return sum(losses) / len(losses)


def assert_40_steps_cut_the_loss_by_a_fifth(model, task, directory) -> None:
    """Set `model` up for `task`, train it 40 steps: its loss on fixed batches drops by >= 20 %."""
    model.prepare_data()
    model.setup()
    batches = fixed_batches(task)
    before = mean_loss(model, batches)
    trainer(max_steps=40, limit_val_batches=0, default_root_dir=directory, progress=False).fit(model)
    after = mean_loss(model, batches)
    assert model.global_step == 40
    assert after < 0.8 * before, (before, after)


def test_training_with_pyannote_speaker_diarization_task_decreases_the_loss(tiny_protocol, tmp_path):
    task = diarization_task(tiny_protocol, duration=2.0, batch_size=8, cache_dir=tmp_path)
    model = WavLMSegmentation(wavlm=tiny_config(), task=task, **TINY_BACKEND)
    # specifications and the classifier come from the task
    assert_40_steps_cut_the_loss_by_a_fifth(model, task, tmp_path)
    # up to 4 speakers per chunk, 2 per frame: 1 + 4 + 6 powerset classes
    assert model.dimension == 11


def test_task_cache_is_one_file_per_protocol_and_chunk_duration(tiny_protocol, tmp_path):
    two = task_cache_path(tiny_protocol, 2.0, tmp_path)
    eight = task_cache_path(tiny_protocol, 8.0, tmp_path)
    assert two != eight and two.parent == eight.parent == tmp_path


def test_task_cache_without_a_directory_is_never_shared(tiny_protocol):
    # a shared default would hand one corpus's cached metadata to another of the same name
    first = task_cache_path(tiny_protocol, 2.0, None)
    second = task_cache_path(tiny_protocol, 2.0, None)
    assert first.parent != second.parent and not first.exists()


class LoggingRegression(lightning.LightningModule):
    """A linear regression that shows a long-named metric on the progress bar."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch).pow(2).mean()
        self.log("DiarizationErrorRate/train", 0.25, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.randn(12, 2), batch_size=3)


def bar_states(captured: str) -> list[str]:
    """Every state of the tqdm bars written to a captured stream."""
    return [line for line in re.split(r"[\r\n]+", captured) if line.strip()]


def test_a_stage_bounded_by_steps_counts_steps_and_never_shows_a_negative_epoch(capsys):
    trainer(max_steps=10, limit_val_batches=0, progress=True).fit(LoggingRegression())
    states = bar_states(capsys.readouterr().out)
    # drawn from the start with its epoch and its length (not "Training: 0/?")
    assert states[0].startswith("epoch 1:") and "0/10" in states[0], states[0]
    # 4 batches per epoch, 10 steps: the third epoch; no "Epoch 2/-2" (max_epochs=-1)
    line = states[-1]
    assert line.startswith("epoch 3:"), line
    assert "10/10" in line and "/-" not in line
    assert "DiarizationErrorRate/train=0.25" in line


def test_a_stage_bounded_by_epochs_says_which_epoch_of_how_many(capsys):
    trainer(max_epochs=2, limit_val_batches=0, progress=True).fit(LoggingRegression())
    line = bar_states(capsys.readouterr().out)[-1]
    assert line.startswith("epoch 2/2:") and "8/8" in line, line


def test_progress_bar_shows_whole_metric_names_or_none():
    bar = StageProgressBar(columns=StageProgressBar.RESERVED_COLUMNS + 40)
    metrics = {"loss/train": 0.123456, "DiarizationErrorRate": 0.5, "v_num": 3}
    # 40 columns: the first pair (15 characters) fits, the second would make 42
    assert bar.metrics_text(metrics) == "loss/train=0.123"
    assert StageProgressBar(columns=200).metrics_text(metrics) == (
        "loss/train=0.123, DiarizationErrorRate=0.5"
    )
