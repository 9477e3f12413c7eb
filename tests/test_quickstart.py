"""The quickstart, end to end on the tiny corpus with tiny budgets: outputs, resumption."""

import json

import pytest
import yaml
from helpers import TINY_BACKEND
from pyannote.audio import Model, Pipeline
from real_recordings import DATABASE, RECORDINGS

from pyannote_wavlm_prune.data.config import SimulationConfig
from pyannote_wavlm_prune.data.simulate import speaker_pools
from pyannote_wavlm_prune.frontends.presets import tiny_config
from pyannote_wavlm_prune.frontends.structure import Structure
from pyannote_wavlm_prune.recipe import Budget
from pyannote_wavlm_prune.recipe.quickstart import (
    EMBEDDING_CORPUS_SEED,
    STAGES,
    QuickstartSettings,
    purity_floor_line,
    real_recordings,
    results_table,
    run_quickstart,
    stage_times_table,
)


def tiny_settings(real_recordings=None) -> QuickstartSettings:
    return QuickstartSettings(
        preset="tiny",
        model={"wavlm": tiny_config(), **TINY_BACKEND},
        duration=2.0,
        batch_size=4,
        teacher=Budget(max_epochs=1, limit_train_batches=3, limit_val_batches=2, k=1),
        prune=Budget(max_epochs=4, limit_train_batches=15, limit_val_batches=2, k=2),
        distill=Budget(max_epochs=1, limit_train_batches=2, limit_val_batches=2, k=1),
        finetune=Budget(max_epochs=1, limit_train_batches=3, limit_val_batches=2, k=1),
        sparsity=0.3,
        tolerance=0.05,
        warmup_epochs=1.0,
        prune_learning_rate={"student": 2e-3, "gates": 0.5, "lagrangian": 0.5},
        embedding_corpus="tiny",
        embedding_epochs=1,
        optimize_iterations=2,
        evaluate_step=1.0,
        real_recordings=real_recordings,
    )


def one_real_recording(directory) -> str:
    """A database.yml of one of the stored real recordings (tst01, four AMI speakers in 30 s),
    so that the tiny quickstart scores two real recordings (with pyannote's sample) instead of
    five: the same code, a third of the time."""
    (directory / "one.lst").write_text("tst01\n")
    database = directory / "database.yml"
    test = {"uri": "one.lst", "annotation": str(DATABASE.parent / "real.rttm"),
            "annotated": str(DATABASE.parent / "real.uem")}
    database.write_text(yaml.safe_dump({
        "Protocols": {"Real": {"SpeakerDiarization": {"one": {"scope": "file", "test": test}}}},
        "Databases": {"Real": str(DATABASE.parent / "{uri}.wav")}}))
    return str(database)


@pytest.fixture(scope="module")
def real_database(tmp_path_factory):
    return one_real_recording(tmp_path_factory.mktemp("real"))


@pytest.fixture(scope="module")
def quickstart(tiny_corpus, real_database, tmp_path_factory):
    output = tmp_path_factory.mktemp("quickstart")
    return output, run_quickstart(output, tiny_corpus, settings=tiny_settings(real_database),
                                  progress=False)


def test_quickstart_prunes_to_its_target_and_reports_both_models(quickstart):
    output, results = quickstart
    rows = results["rows"]
    assert list(rows) == ["teacher", "pruned"]
    teacher = Model.from_pretrained(results["checkpoints"]["teacher"])
    pruned = Model.from_pretrained(results["checkpoints"]["pruned"])
    full = Structure.full(teacher.frontend.config).params()
    assert rows["teacher"]["wavlm_params"] == full
    assert rows["pruned"]["wavlm_params"] == pruned.structure.params()
    # pruning finished exactly on the target
    assert abs(1 - rows["pruned"]["wavlm_params"] / full - 0.3) <= 0.005
    report = json.loads((output / "2-prune" / "pruning.json").read_text())
    assert report["target"] == 0.3 and abs(report["sparsity"] - 0.3) <= 0.005
    # L1 minus cosine summed over the 3 distilled hidden states of the tiny WavLM: >= -3
    for key in ("distillation", "distillation_deterministic"):
        assert isinstance(report[key], float) and -3.0 <= report[key] < 10.0, report
    # the deterministic gates' structure was near the target already (projection controller)
    assert abs(report["sparsity_deterministic"] - 0.3) <= 0.05
    assert (output / "2-prune" / "sparsity.png").is_file()
    assert rows["pruned"]["wavlm_gmacs_per_8s"] < rows["teacher"]["wavlm_gmacs_per_8s"]
    assert rows["teacher"]["speedup"] == 1.0
    for row in rows.values():
        assert 0.0 <= row["der_oracle"] <= 100.0 and 0.0 <= row["der_pipeline"] <= 200.0
        assert 0.0 <= row["der_pipeline_known_count"] <= 200.0
        # purity of a segmentation that detects speech is at least that of one local speaker
        # per chunk, up to the local speakers' false alarms
        assert 50.0 <= row["single_speaker_purity"] <= 100.0 and 0.0 < row["local_purity"] <= 100.0
    assert rows["teacher"]["single_speaker_purity"] == rows["pruned"]["single_speaker_purity"]
    # the student that was pruned had reached the target at validation
    history = json.loads((output / "2-prune" / "checkpoints" / "history.json").read_text())
    selected = [e for e in history["history"] if e["path"] in history["selected"]]
    # (within 0.05 of the 0.3 target: the margin, pruned sparsity minus target, >= -0.05)
    assert selected and all(e["DistillPrune/val/sparsity_margin"] >= -0.05 for e in selected)
    assert json.loads((output / "results.json").read_text()) == results


def test_quickstart_table_lists_sizes_relative_to_the_teacher(quickstart):
    _, results = quickstart
    lines = results_table(results).splitlines()
    assert len(lines) == 6
    assert lines[2].startswith("| teacher |") and "(100 %)" in lines[2]
    share = round(100 * results["rows"]["pruned"]["wavlm_params"] / results["rows"]["teacher"]["wavlm_params"])
    assert lines[3].startswith("| pruned |") and f"({share} %)" in lines[3]
    assert lines[0].count("|") == lines[1].count("|") == lines[2].count("|") == 9
    real = results["real_recordings"]
    for line, name in zip(lines[4:], ("teacher", "pruned")):
        assert line == (
            f"| {name}, on real recordings (2 files, 60 s) | | | | "
            f"{real[name]['der_oracle']:.1f} | {real[name]['der_pipeline']:.1f} | "
            f"{real[name]['der_pipeline_known_count']:.1f} | {real[name]['local_purity']:.1f} |"
        )
    floor = purity_floor_line(results)
    assert f"{results['rows']['teacher']['single_speaker_purity']:.1f} % on the test set" in floor


def test_quickstart_scores_both_pipelines_on_the_real_recordings_it_is_given(quickstart,
                                                                           real_database):
    _, results = quickstart
    real = results["real_recordings"]
    assert real["uris"] == ["sample", "tst01"]
    # the most a DER can be: all reference speech missed or confused, and two speakers (the
    # most a frame of the powerset models holds) everywhere: false alarms of twice 60 s
    speech = sum(segment.duration for file in real_recordings(real_database)
                 for segment, _ in file["annotation"].itertracks())
    worst = 100 * (1 + 2 * 60.0 / speech)
    for name in ("teacher", "pruned"):
        assert real[name]["duration"] == pytest.approx(60.0, abs=0.1)
        # scored against the recordings' references: numbers, not the test set's
        for der in ("der_oracle", "der_pipeline", "der_pipeline_known_count"):
            assert 0.0 <= real[name][der] <= worst
        assert real[name]["der_oracle"] != results["rows"][name]["der_oracle"]
    # the same reference and chunks for both: the same purity floor
    assert real["teacher"]["single_speaker_purity"] == real["pruned"]["single_speaker_purity"]


def test_the_real_recordings_make_quickstart_gives_are_pyannote_s_sample_and_four_ami_excerpts():
    files = real_recordings(DATABASE)
    assert [file["uri"] for file in files] == ["sample", *RECORDINGS]
    assert all(file["annotation"].labels() for file in files)
    assert [file["uri"] for file in real_recordings()] == ["sample"]


def test_quickstart_refuses_missing_real_recordings_before_any_work(tmp_path):
    corpus = tmp_path / "corpus"
    with pytest.raises(FileNotFoundError, match="missing.yml"):
        run_quickstart(tmp_path / "out", corpus,
                       settings=QuickstartSettings(real_recordings=tmp_path / "missing.yml"),
                       progress=False)
    assert not corpus.exists()


def test_quickstart_times_every_stage(quickstart):
    _, results = quickstart
    assert list(results["seconds"]) == STAGES
    assert all(seconds >= 0 for seconds in results["seconds"].values())
    assert sum(results["seconds"].values()) <= 60 * results["minutes"]
    lines = stage_times_table(results).splitlines()
    assert [line.split(" | ")[0].strip("| ") for line in lines[2:]] == [*STAGES, "total"]


def test_quickstart_embedding_learns_the_voices_of_its_own_corpus(quickstart, tiny_corpus):
    _, results = quickstart
    embedding = Model.from_pretrained(results["embedding"]["checkpoint"])
    voices = speaker_pools(SimulationConfig.from_preset("tiny", seed=EMBEDDING_CORPUS_SEED))
    quickstart_speakers = speaker_pools(SimulationConfig.from_preset("tiny"))
    classes = set(embedding.specifications.classes)
    assert classes and classes <= set(voices["train"])
    assert not classes & set(quickstart_speakers["train"])


def test_embedding_corpus_has_none_of_the_quickstart_development_or_test_speakers():
    quickstart = speaker_pools(SimulationConfig.from_preset("quickstart"))
    voices = speaker_pools(SimulationConfig.from_preset("voices", seed=EMBEDDING_CORPUS_SEED))
    assert len(voices["train"]) == 200
    # the same seed as the quickstart corpus would draw its 40 speakers first, test ones included
    assert not set(voices["train"]) & {*quickstart["development"], *quickstart["test"]}


def test_quickstart_leaves_a_plot_and_a_pipeline_directory(quickstart):
    output, results = quickstart
    with open(results["plot"], "rb") as file:
        assert file.read(8) == b"\x89PNG\r\n\x1a\n"
    pipeline = Pipeline.from_pretrained(results["pipeline"])
    segmentation = pipeline._segmentation.model
    assert segmentation.structure == Model.from_pretrained(results["checkpoints"]["pruned"]).structure


def test_quickstart_run_again_redoes_nothing(quickstart, tiny_corpus, real_database):
    output, results = quickstart
    kept = {path: path.stat().st_mtime_ns for path in output.rglob("*.ckpt")}
    again = run_quickstart(output, tiny_corpus, settings=tiny_settings(real_database),
                           progress=False)
    assert {path: path.stat().st_mtime_ns for path in output.rglob("*.ckpt")} == kept
    assert again["rows"]["pruned"]["wavlm_params"] == results["rows"]["pruned"]["wavlm_params"]
    assert again["rows"]["pruned"]["der_oracle"] == pytest.approx(results["rows"]["pruned"]["der_oracle"])
