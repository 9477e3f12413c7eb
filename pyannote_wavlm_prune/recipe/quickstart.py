"""The quickstart: the whole method on a simulated corpus, offline, on a CPU, in minutes.

    simulate > fine-tune a small WavLM teacher > DistillPrune to 80 % > prune > distil >
    fine-tune > speaker embedding > tune both pipelines > evaluate both (on the test set and
    on real recordings) > table + plot + pipeline directory

Every stage is resumable (see `recipe`): an interrupted quickstart redoes only what was not
finished. The WavLM is small and randomly initialised (no pretrained weights offline), so
the figures show the method at work, not the accuracy of WavLM Base+ on real meetings.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning
import torch

from ..data.protocols import get_protocol
from ..data.simulate import simulate
from ..frontends.cost import expected_params
from ..frontends.presets import tiny_config
from ..models.loading import load_model
from ..pipelines.embedding_training import train_embedding
from ..pipelines.evaluate import evaluate_pipeline, get_files
from ..pipelines.export import export_pipeline, load_pipeline
from ..pipelines.optimize import optimize_pipeline
from ..pipelines.segmentation_bench import bench_segmentation
from .callbacks import save_figure
from .stages import Budget, distill_stage, finetune_stage, prune_stage, train_stage
from .training import StageProgressBar


def quickstart_wavlm_config():
    """A small Base-shaped WavLM (about 0.5 M parameters) that learns in minutes on a CPU

    No dropout: a model this small, trained this briefly, does not overfit, and on a CPU
    dropout's random masks cost a third of a training step.
    """
    return tiny_config(
        "base",
        hidden_size=96,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=384,
        conv_dim=(32,) * 7,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
    )


QUICKSTART_BACKEND = {
    "projection": {"dimension": 64},
    "conformer": {"num_layers": 2, "num_heads": 4, "ffn_dim": 128, "depthwise_conv_kernel_size": 15},
}


@dataclass
class QuickstartSettings:
    """Budgets of the quickstart (the defaults take about 12 minutes on 2 idle CPU cores)

    `model`: WavLMSegmentation options of the teacher (defaults to the quickstart's small
    WavLM and back end); `preset`: the simulated corpus (see `data.config.PRESETS`).
    """

    preset: str = "quickstart"
    model: dict = field(default_factory=lambda: {"wavlm": quickstart_wavlm_config(), **QUICKSTART_BACKEND})
    duration: float = 4.0
    batch_size: int = 16
    teacher: Budget = field(default_factory=lambda: Budget(max_epochs=6, limit_train_batches=20, k=2))
    prune: Budget = field(default_factory=lambda: Budget(max_epochs=6, limit_train_batches=20, k=2))
    distill: Budget = field(default_factory=lambda: Budget(max_epochs=3, limit_train_batches=20, k=1))
    finetune: Budget = field(default_factory=lambda: Budget(max_epochs=6, limit_train_batches=20, k=2))
    # the projection controller holds the expected sparsity on the target; pruning then
    # finishes exactly on it (within 0.005), in WavLM parameters
    sparsity: float = 0.8
    tolerance: float = 0.01
    warmup_epochs: float = 3.0
    prune_learning_rate: dict = field(
        default_factory=lambda: {"student": 2e-3, "gates": 0.1, "lagrangian": 0.05}
    )
    # keep the teacher's back end (carried by the distilled student) for the last fine-tuning:
    # see `recipe.finetune_stage`
    fresh_back_end: bool = False
    # the corpus the speaker embedding learns from: None, the quickstart corpus' 24 training
    # speakers; or a preset name (e.g. "voices": 200 other espeak-ng voices, without overlap),
    # built beside the quickstart corpus. "voices" did not lower the pipeline's DER (docs/results.md).
    embedding_corpus: str | None = None
    embedding_epochs: int = 4
    optimize_iterations: int = 10
    evaluate_step: float = 0.25
    # real recordings that both pipelines are scored on besides pyannote's sample: a
    # database.yml defining one protocol, whose test subset lists them with their references
    # (`make quickstart` passes the checkout's tests/data/real/database.yml: four 30 s AMI
    # excerpts); None, pyannote's sample alone
    real_recordings: str | os.PathLike | None = None
    seed: int = 0

    def __post_init__(self):
        for budget in (self.teacher, self.prune, self.distill, self.finetune):
            budget.duration = self.duration
            budget.batch_size = self.batch_size
            budget.limit_val_batches = budget.limit_val_batches or 8
            budget.trainer.setdefault("accelerator", "cpu")


# the seed of the embedding's corpus: with seed 3, none of its voices is a speaker of the
# quickstart corpus (a test checks it); seed 0 (the quickstart corpus' own) draws those 40
# first, and seeds 1 and 2 happen to draw a few of them
EMBEDDING_CORPUS_SEED = 3

STAGES = ["corpus", "teacher", "prune", "distill", "finetune", "embedding", "pipelines", "evaluate"]

# what each stage does, as the quickstart announces it
STAGE_DESCRIPTIONS = {
    "corpus": "simulate the conversations (espeak-ng voices)",
    "teacher": "fine-tune the WavLM teacher for diarization",
    "prune": "DistillPrune: learn what to remove, then prune",
    "distill": "distil the teacher into the pruned student",
    "finetune": "fine-tune the pruned student for diarization",
    "embedding": "train a speaker embedding (x-vector) on the training speakers",
    "pipelines": "tune a diarization pipeline for each model",
    "evaluate": "DER of both pipelines, on the test set and on real recordings",
}


def run_quickstart(
    output: str | os.PathLike = "quickstart",
    data: str | os.PathLike = "data/simulated/quickstart",
    settings: QuickstartSettings | None = None,
    progress: bool = True,
) -> dict:
    """Run (or resume) the quickstart; return its results (also in `output`/results.json)

    `data`: root of the simulated corpus; the speaker embedding's corpus (preset
    `settings.embedding_corpus`) goes beside it, in a folder named after its preset.
    `progress`: announce each stage and show a bar inside it (steps, trials, files).
    """

    settings = settings or QuickstartSettings()
    # read before any work starts: a wrong database.yml fails now, not after the training
    recordings = real_recordings(settings.real_recordings)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    seconds = {}

    @contextlib.contextmanager
    def stage(name: str):
        if progress:
            print(f"[{STAGES.index(name) + 1}/{len(STAGES)}] {name}: {STAGE_DESCRIPTIONS[name]}", flush=True)
        # each stage seeded on its own: a resumed quickstart computes what an uninterrupted one would
        lightning.seed_everything(settings.seed + STAGES.index(name), verbose=False)
        begin = time.monotonic()
        yield
        seconds[name] = time.monotonic() - begin

    with stage("corpus"):
        database = simulate(data, preset=settings.preset, progress=progress)
        protocol = get_protocol(database)

    with stage("teacher"):
        teacher = train_stage(
            protocol, output / "1-teacher",
            model_options=settings.model,
            budget=settings.teacher, progress=progress,
        )

    with stage("prune"):
        pruned = prune_stage(
            protocol, output / "2-prune", teacher, sparsity=settings.sparsity,
            warmup_epochs=settings.warmup_epochs, tolerance=settings.tolerance,
            task_options={"learning_rate": settings.prune_learning_rate},
            budget=settings.prune, progress=progress,
        )

    with stage("distill"):
        distilled = distill_stage(protocol, output / "3-distill", teacher, pruned,
                                  budget=settings.distill, progress=progress)

    with stage("finetune"):
        final = finetune_stage(protocol, output / "4-finetune", distilled, budget=settings.finetune,
                               fresh_back_end=settings.fresh_back_end, progress=progress)

    with stage("embedding"):
        embedding = output / "embedding.ckpt"
        voices = database
        if settings.embedding_corpus is not None:
            voices = Path(data).parent / settings.embedding_corpus / "database.yml"
        if not embedding.exists():
            if settings.embedding_corpus is not None:
                simulate(voices.parent, preset=settings.embedding_corpus, seed=EMBEDDING_CORPUS_SEED,
                         progress=progress)
            train_embedding(get_protocol(voices), checkpoint=embedding, max_epochs=settings.embedding_epochs,
                            trainer_options={"enable_progress_bar": progress, "logger": False,
                                             "enable_model_summary": False,
                                             "callbacks": [StageProgressBar()] if progress else []})

    with stage("pipelines"):
        development = get_files(protocol, "development")
        pipelines = {}
        for name, segmentation in (("teacher", teacher), ("pruned", final)):
            directory = output / f"pipeline-{name}"
            if not (directory / "config.yaml").exists():
                untuned = output / f".untuned-{name}"
                # embeddings from each speaker's non-overlapped frames, as pyannote's released
                # pipelines do (docs/results.md: no effect on the tuned pipeline, 46.7 % against 46.8 %)
                export_pipeline(untuned, segmentation, embedding, overwrite=True,
                                segmentation_step=settings.evaluate_step, embedding_batch_size=16,
                                embedding_exclude_overlap=True)
                optimize_pipeline(untuned, development, output=directory,
                                  num_iterations=settings.optimize_iterations, show_progress=progress)
            pipelines[name] = directory

    with stage("evaluate"):
        test = get_files(protocol, "test")
        rows = {}
        speed = bench_segmentation([teacher, final], chunk_duration=8.0, batch_size=4, repeats=5,
                                   num_threads=torch.get_num_threads(), names=["teacher", "pruned"])
        for (name, directory), measured in zip(pipelines.items(), speed):
            model = load_model(teacher if name == "teacher" else final)
            scores = _score(directory, test, f"{name}, test set", progress)
            rows[name] = {
                "wavlm_params": _wavlm_params(model),
                "wavlm_gmacs_per_8s": measured.wavlm_macs / 1e9 if measured.wavlm_macs else None,
                "params": measured.parameters,
                "speedup": measured.speedup,
                **scores,
            }
        real = {"uris": [file["uri"] for file in recordings],
                **{name: _score(directory, recordings, f"{name}, real recordings", progress)
                   for name, directory in pipelines.items()}}

    final_model = load_model(final)
    plot = plot_structure(final_model, output / "pruned-structure.png")
    results = {
        "rows": rows,
        "real_recordings": real,
        "structure": final_model.structure.to_dict(),
        "plot": str(plot),
        "pipeline": str(pipelines["pruned"]),
        "checkpoints": {"teacher": str(teacher), "pruned": str(final)},
        "embedding": {"checkpoint": str(embedding), "corpus": str(voices)},
        "seconds": seconds,
        "minutes": (time.monotonic() - started) / 60,
    }
    (output / "results.json").write_text(json.dumps(results, indent=2))
    return results


def real_recording() -> dict:
    """pyannote's bundled real recording (30 s, two speakers, with its reference annotation)."""
    from pyannote.audio.sample import SAMPLE_FILE

    # the audio file, not the decoded waveform: the pipeline reads it as any other file
    return {key: SAMPLE_FILE[key] for key in ("uri", "audio", "annotation", "annotated")}


def real_recordings(database: str | os.PathLike | None = None) -> list[dict]:
    """pyannote's sample, then the test files of `database`'s protocol (a database.yml
    defining one), each with its reference annotation."""
    files = [real_recording()]
    if database is not None:
        files += get_files(get_protocol(database), "test")
    uris = [file["uri"] for file in files]
    if len(set(uris)) < len(uris):
        raise ValueError(f"real recordings of {database}: uris {uris} repeat: expected each once "
                         "(pyannote's sample is 'sample').")
    return files


def _score(directory: Path, files: list, description: str, progress: bool) -> dict:
    """What the quickstart's table reports of a pipeline directory on `files`

    DER of its segmentation alone (oracle clustering), of the whole pipeline, and of the
    whole pipeline told the reference number of speakers; the local speakers' purity (see
    `pipelines.evaluate.local_speaker_purity`) and the purity of one local speaker per chunk.
    """
    oracle = evaluate_pipeline(load_pipeline(directory, clustering="OracleClustering"), files,
                               progress=progress, description=f"{description}, oracle clustering")
    pipeline = load_pipeline(directory)
    full = evaluate_pipeline(pipeline, files, progress=progress, description=f"{description}, pipeline")
    known = evaluate_pipeline(pipeline, files, num_speakers="oracle", progress=progress,
                              description=f"{description}, known speaker count")
    return {
        "der_oracle": 100 * oracle.der,
        "der_pipeline": 100 * full.der,
        "der_pipeline_known_count": 100 * known.der,
        "local_purity": 100 * full.local_purity,
        "single_speaker_purity": 100 * full.single_speaker_purity,
        "duration": full.duration,
    }


def _wavlm_params(model) -> int:
    return int(expected_params(model.frontend))


def results_table(results: dict) -> str:
    """The quickstart's table (markdown): both models on the test set, then on real recordings."""
    rows = results["rows"]
    teacher = rows["teacher"]
    lines = [
        "| model | WavLM params | WavLM GMACs / 8 s | speed-up | DER oracle (%) | DER pipeline (%) "
        "| DER pipeline, known speaker count (%) | local-speaker purity (%) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def scores(row: dict) -> str:
        return (f"{row['der_oracle']:.1f} | {row['der_pipeline']:.1f} | "
                f"{row['der_pipeline_known_count']:.1f} | {row['local_purity']:.1f} |")

    for name, row in rows.items():
        share = row["wavlm_params"] / teacher["wavlm_params"]
        lines.append(
            f"| {name} | {row['wavlm_params'] / 1e6:.3f} M ({100 * share:.0f} %) | "
            f"{row['wavlm_gmacs_per_8s']:.3f} | {row['speedup']:.2f}x | " + scores(row)
        )
    real = results["real_recordings"]
    for name in rows:
        lines.append(f"| {name}, on real recordings ({len(real['uris'])} files, "
                     f"{real[name]['duration']:.0f} s) | | | | " + scores(real[name]))
    return "\n".join(lines)


def purity_floor_line(results: dict) -> str:
    """What the purity column is measured against (one sentence)."""
    return (
        "local-speaker purity: share of each local speaker's speech (per chunk) spoken by its "
        "main reference speaker; one local speaker for all speech of a chunk would give "
        f"{results['rows']['teacher']['single_speaker_purity']:.1f} % on the test set and "
        f"{results['real_recordings']['teacher']['single_speaker_purity']:.1f} % on the real "
        "recordings, the reference 100 %"
    )


def stage_times_table(results: dict) -> str:
    """The time each stage took (markdown); a stage found done by a resumed run took about 0 s."""
    lines = ["| stage | minutes |", "| --- | --- |"]
    lines += [f"| {name} | {seconds / 60:.1f} |" for name, seconds in results["seconds"].items()]
    lines.append(f"| total | {results['minutes']:.1f} |")
    return "\n".join(lines)


def plot_structure(model, path: str | os.PathLike) -> Path:
    """Bar charts of what survived pruning, per layer: one per unit kind (`Structure.panels`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = model.structure.panels()  # one per unit kind that has one
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for axis, (title, kept, total) in zip(axes, panels):
        positions = range(1, len(kept) + 1)
        axis.bar(positions, total, color="#dddddd", label="unpruned")
        axis.bar(positions, kept, color="#1f77b4", label="kept")
        axis.set_title(f"{title}: {sum(kept)} / {sum(total)} kept")
        axis.set_xlabel("layer")
        axis.set_xticks(list(positions))
    axes[0].legend(loc="upper right", fontsize=8)
    return save_figure(figure, path)
