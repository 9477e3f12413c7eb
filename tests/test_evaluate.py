"""DER evaluation on a protocol, RTTM output, real-time factors, and the speed benchmark."""

import argparse
import json

import numpy as np
import pytest
import torch
from helpers import tiny_model
from pyannote.core import Annotation, Segment, SlidingWindow, SlidingWindowFeature
from pyannote.database.util import load_rttm
from pyannote.metrics.diarization import DiarizationErrorRate

from pyannote_wavlm_prune import save_checkpoint
from pyannote_wavlm_prune.commands import bench as bench_command
from pyannote_wavlm_prune.commands import evaluate as evaluate_command
from pyannote_wavlm_prune.frontends.cost import expected_macs
from pyannote_wavlm_prune.pipelines import SpeakerDiarization
from pyannote_wavlm_prune.pipelines.evaluate import (
    evaluate_pipeline,
    get_files,
    local_speaker_purity,
)
from pyannote_wavlm_prune.pipelines.segmentation_bench import bench_segmentation, count_macs

PRUNED = {
    "conv_channels": [16, 24, 8, 32, 12, 20, 32],
    "kept_heads": [[0, 2], [1]],
    "ffn_widths": [16, 40],
}


@pytest.fixture(scope="module")
def pruned():
    return tiny_model(duration=5.0, structure=PRUNED)


@pytest.fixture(scope="module")
def oracle_pipeline(pruned):
    # OracleClustering scores the segmentation alone, what pruning papers report
    pipeline = SpeakerDiarization(
        segmentation=pruned, clustering="OracleClustering", segmentation_step=1.0
    )
    return pipeline.instantiate(pipeline.default_parameters())


@pytest.fixture(scope="module")
def test_files(tiny_protocol):
    return get_files(tiny_protocol, "test")


@pytest.fixture(scope="module")
def report(oracle_pipeline, test_files, tmp_path_factory):
    rttm_dir = tmp_path_factory.mktemp("rttm")
    return evaluate_pipeline(oracle_pipeline, test_files, rttm_dir=rttm_dir, progress=False)


def test_der_components_add_up_to_the_total_per_file_and_overall(report, test_files):
    assert [score.uri for score in report.files] == [f["uri"] for f in test_files]
    for score in report.files:
        errors = score.missed + score.false_alarm + score.confusion
        assert score.der == pytest.approx(errors / score.reference, abs=1e-12)
        assert score.reference > 10.0  # seconds of reference speech in a 15-20 s file
    assert report.missed == pytest.approx(sum(s.missed for s in report.files))
    assert report.reference == pytest.approx(sum(s.reference for s in report.files))
    assert report.der == pytest.approx(
        (report.missed + report.false_alarm + report.confusion) / report.reference, abs=1e-12
    )
    assert report.der > 0  # a random tiny model cannot be perfect


# one 4 s chunk of 40 frames: A speaks 0-2 s, B 1-4 s
PURITY_FILE = {"uri": "purity", "duration": 4.0}
PURITY_FRAMES = SlidingWindow(start=0.0, duration=0.1, step=0.1)


@pytest.fixture(scope="module")
def purity_file():
    annotation = Annotation(uri="purity")
    annotation[Segment(0.0, 2.0)] = "A"
    annotation[Segment(1.0, 4.0)] = "B"
    return {**PURITY_FILE, "annotation": annotation}


def _local_speakers(*turns):
    """(1 chunk, 40 frames, len(turns)) binary segmentation, one local speaker per (start, end)."""
    data = np.zeros((1, 40, len(turns)))
    for speaker, (start, end) in enumerate(turns):
        data[0, round(10 * start):round(10 * end), speaker] = 1.0
    return SlidingWindowFeature(data, SlidingWindow(start=0.0, duration=4.0, step=4.0))


@pytest.mark.parametrize(
    "turns, speech, pure",
    [
        # the reference itself: every local speaker is one person
        ([(0.0, 2.0), (1.0, 4.0)], 5.0, 5.0),
        # all speech in one local speaker: B, the main one, spoke 3 of its 4 s
        ([(0.0, 4.0)], 4.0, 3.0),
        # a turn change missed by 1 s: the first local speaker holds 2 s of A and 2 s of B
        ([(0.0, 3.0), (3.0, 4.0)], 4.0, 3.0),
        # a change found inside the overlap: both local speakers are pure
        ([(0.0, 1.5), (1.5, 4.0)], 4.0, 4.0),
    ],
)
def test_local_speaker_purity_is_the_share_of_speech_of_each_local_speaker_main_speaker(
    purity_file, turns, speech, pure
):
    measured = local_speaker_purity(_local_speakers(*turns), purity_file, PURITY_FRAMES)
    # within one frame: pyannote's discretisation of the reference may add a boundary frame
    assert measured[0] == pytest.approx(speech, abs=1e-9)
    assert measured[1] == pytest.approx(pure, abs=0.11)
    # the floor: one local speaker active wherever someone speaks (4 s, of which B spoke 3)
    assert measured[2:] == pytest.approx((4.0, 3.0), abs=0.11)


def test_evaluation_reports_the_local_speakers_purity_pooled_over_files(report):
    for score in report.files:
        assert score.local_speech > 0 and 0 <= score.local_pure <= score.local_speech
        assert 0.5 <= score.single_speaker_purity <= 1.0
    pure = sum(score.local_pure for score in report.files)
    assert report.local_purity == pytest.approx(pure / sum(s.local_speech for s in report.files))
    header, *_, total, _, purity = report.table().splitlines()
    assert header.endswith("purity%") and total.endswith(f"{100 * report.local_purity:8.1f}")
    assert f"would give {100 * report.single_speaker_purity:.1f} %" in purity
    assert report.to_dict()["total"]["local_purity"] == report.local_purity


def test_rttm_rescored_with_pyannote_metrics_gives_the_same_der(report, test_files):
    metric = DiarizationErrorRate(collar=0.0)
    for file, path in zip(test_files, report.rttm, strict=True):
        assert path.name == f"{file['uri']}.rttm"
        hypothesis = load_rttm(path)[file["uri"]]
        metric(file["annotation"], hypothesis, uem=file["annotated"])
    assert abs(metric) == pytest.approx(report.der, abs=1e-9)


def test_collar_and_skip_overlap_score_less_reference_speech(oracle_pipeline, test_files, report):
    file, first = test_files[:1], report.files[0]
    collared = evaluate_pipeline(oracle_pipeline, file, collar=0.5, progress=False)
    no_overlap = evaluate_pipeline(oracle_pipeline, file, skip_overlap=True, progress=False)
    assert collared.collar == 0.5 and no_overlap.skip_overlap
    assert collared.reference < first.reference
    assert no_overlap.reference < first.reference
    assert no_overlap.confusion <= first.confusion


def test_real_time_factors_count_segmentation_inside_the_pipeline(report):
    assert report.duration == pytest.approx(sum(s.duration for s in report.files))
    assert 0 < report.segmentation_real_time_factor <= report.real_time_factor
    for score in report.files:
        assert 0 < score.segmentation_time <= score.processing_time


def test_evaluate_command_scores_a_segmentation_checkpoint_with_oracle_clustering(
    pruned, tiny_protocol, tmp_path, capsys
):
    checkpoint = save_checkpoint(pruned, tmp_path / "segmentation.ckpt")
    parser = argparse.ArgumentParser()
    evaluate_command.add_arguments(parser)
    database = str(next(iter(tiny_protocol.preprocessors["audio"].registry.configs)))
    args = parser.parse_args([
        str(checkpoint), "--protocol", tiny_protocol.name, "--database", database,
        "--segmentation-step", "1.0", "--rttm", str(tmp_path / "rttm"),
        "--json", str(tmp_path / "report.json"), "--no-progress",
    ])
    assert evaluate_command.run(args) == 0
    printed = capsys.readouterr().out
    assert "TOTAL" in printed and "real-time factor" in printed
    saved = json.loads((tmp_path / "report.json").read_text())
    assert len(saved["files"]) == 2 and len(saved["rttm"]) == 2
    total = saved["total"]
    errors = total["missed"] + total["false_alarm"] + total["confusion"]
    assert total["der"] == pytest.approx(errors / total["reference"])


def test_files_without_reference_speech_are_scored_as_pyannote_metrics_defines_it():
    from pyannote_wavlm_prune.pipelines.evaluate import EvaluationReport, FileScore

    def score(uri, reference, false_alarm):
        return FileScore(uri=uri, duration=10.0, reference=reference, missed=0.0,
                         false_alarm=false_alarm, confusion=0.0, processing_time=1.0,
                         segmentation_time=0.5)

    metric = DiarizationErrorRate()
    silent = Annotation(uri="silent")
    # what pyannote.metrics gives with no reference speech: 0 without error, 1 with any
    spoken = Annotation(uri="silent")
    spoken[Segment(0, 2)] = "A"
    assert metric(silent, silent) == score("a", 0.0, 0.0).der == 0.0
    assert metric(silent, spoken) == score("b", 0.0, 2.0).der == 1.0
    alone = EvaluationReport(files=[score("a", 0.0, 2.0)])
    assert alone.der == 1.0 and "TOTAL" in alone.table()
    # pooled with a file that has reference speech: its false alarm counts
    assert EvaluationReport(files=[score("a", 0.0, 2.0), score("c", 8.0, 0.0)]).der == 0.25


# --- speed benchmark ----------------------------------------------------------------------


def test_bench_reports_size_cost_and_speed_as_ratios_to_the_first_model(pruned):
    full = tiny_model(duration=5.0)
    results = bench_segmentation(
        [full, pruned], chunk_duration=2.0, batch_size=2, repeats=2, names=["full", "pruned"]
    )
    first, second = results
    assert (first.parameter_ratio, first.macs_ratio, first.speedup) == (1.0, 1.0, 1.0)
    assert first.parameters == sum(p.numel() for p in full.parameters())
    assert second.parameters == sum(p.numel() for p in pruned.parameters())
    assert second.parameter_ratio == pytest.approx(second.parameters / first.parameters)
    assert second.parameter_ratio < 0.9
    assert second.macs < first.macs
    # the WavLM cost model counts the front end, FlopCounterMode the whole model
    assert 0 < second.wavlm_macs < second.macs
    assert second.speedup == pytest.approx(first.seconds_per_batch / second.seconds_per_batch)


def test_bench_shows_its_progress_batch_by_batch(pruned, capsys):
    bench_segmentation([pruned, pruned], chunk_duration=1.0, batch_size=1, repeats=2, warmup=1,
                       progress=True)
    shown = capsys.readouterr().err
    # (1 warm-up + 2 timed) batches for each of the 2 models
    assert "batches" in shown and "6/6" in shown
    bench_segmentation([pruned], chunk_duration=1.0, batch_size=1, repeats=1)
    assert capsys.readouterr().err == ""  # off by default (a library call)


def test_counted_macs_of_a_pruned_front_end_equal_the_cost_model(pruned):
    # FlopCounterMode alone misses CPU attention (scaled_dot_product_attention): 0 MACs
    waveforms = torch.randn(1, 8 * 16000)
    assert count_macs(pruned.frontend, waveforms) == expected_macs(pruned.frontend, 8 * 16000)


def test_bench_command_prints_one_row_per_checkpoint(pruned, tmp_path, capsys):
    checkpoint = save_checkpoint(pruned, tmp_path / "pruned.ckpt")
    parser = argparse.ArgumentParser()
    bench_command.add_arguments(parser)
    args = parser.parse_args([
        str(checkpoint), str(checkpoint), "--duration", "1.0", "--batch-size", "1",
        "--repeats", "1", "--json", str(tmp_path / "bench.json"),
    ])
    assert bench_command.run(args) == 0
    rows = json.loads((tmp_path / "bench.json").read_text())
    assert [row["parameter_ratio"] for row in rows] == [1.0, 1.0]
    assert rows[0]["macs"] == rows[1]["macs"] > 0
    assert "pruned.ckpt" in capsys.readouterr().out
