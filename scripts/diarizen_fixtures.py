"""How tests/data/diarizen/ was made: DiariZen's own pipeline, run from its code, on tiny models.

Two Python environments: this project's, and a scratch one with DiariZen's code
(github.com/BUTSpeechFIT/DiariZen, MIT, and the fork of pyannote.audio 3.1 it ships in
pyannote-audio/), torch and torchaudio 2.8.0, numpy < 2. The Hugging Face hub is not needed:
the hub directories are DiariZen-format ones with tiny random models (tests/diarizen_cases.py).

    # 1. this project's environment: the simulated conversation and the trained model
    #    (once each; `train` needs the inputs, then changes them), then the inputs
    python scripts/diarizen_fixtures.py simulate tests/data/diarizen/simulated.wav
    python scripts/diarizen_fixtures.py inputs WORK
    python scripts/diarizen_fixtures.py train WORK
    python scripts/diarizen_fixtures.py inputs WORK [--large]
    # 2. DiariZen's environment (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1: torch >= 2.6 loads
    #    weights only, DiariZen's checkpoints need more). Made with: torch==2.8.0
    #    torchaudio==2.8.0 from PyPI, then (torch pinned) "numpy<2" scipy einops toml
    #    pyannote.core==5.0.0 pyannote.database==5.1.3 pyannote.metrics==3.2.1
    #    pyannote.pipeline==3.0.1 "lightning<2.6" "torchmetrics<1.8" asteroid-filterbanks
    #    huggingface_hub omegaconf soundfile scikit-learn rich semver pytorch_metric_learning
    #    torch_audiomentations tensorboardX psutil accelerate; DIR and DIR/pyannote-audio on
    #    the path (a .pth file), DIR/pyannote-audio/pyannote/__init__.py deleted so that
    #    the fork's pyannote.audio joins the installed pyannote.* namespace, and
    #    DIR/pyannote-audio/pyannote/audio/version.py written (__version__ = "3.1.1",
    #    git_version = ""; the fork's setup.py makes it, and its model.py imports it)
    python scripts/diarizen_fixtures.py diarizen WORK [--only CASE ...]
    # 3. this project's environment: keep what DiariZen produced, compare ours with it
    python scripts/diarizen_fixtures.py store WORK
    python scripts/diarizen_fixtures.py compare WORK --label after    # DER per case
    python scripts/diarizen_fixtures.py compare WORK --label before --pipeline pyannote

`train` fine-tunes random-0's model (DiariZen's architecture) on a simulated corpus for 30
epochs (3 minutes on 2 CPU cores) and stores it in DiariZen's format as
tests/data/diarizen/trained.pt: training is not reproducible to the bit across machines, so
the stored file, not its recipe, is the input. `inputs` also writes
tests/data/diarizen/inputs.json (digests of the rebuilt inputs, which the tests check before
comparing). `--large` adds random-weight hubs in the published
Base+ s80 and Large s80 structures (seeds 1 and 2 each), run on pyannote's sample,
EN2002a_30s.wav and the simulated conversation: compared by `compare`, too large to be kept
as fixtures. `compare --pipeline pyannote` imports with pyannote 4's behaviour (what main
did before the DiariZen options): the "before" column of docs/diarizen.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import diarizen_cases as cases  # noqa: E402

# the published structures compared with random weights (not kept as fixtures)
LARGE_MODELS = {"base-s80-1": ("wavlm_base_s80_md", 1), "base-s80-2": ("wavlm_base_s80_md", 2),
                "large-s80-1": ("wavlm_large_s80_md", 1), "large-s80-2": ("wavlm_large_s80_md", 2)}
LARGE_AUDIO = ("sample", "EN2002a_30s", "simulated")


def simulate(output: Path) -> None:
    """A 30 s conversation of 4 simulated voices with overlap (this project's simulator)."""
    import numpy as np

    from pyannote_wavlm_prune.data.config import SimulationConfig
    from pyannote_wavlm_prune.data.simulate import Simulator

    config = SimulationConfig.from_preset("tiny", num_speakers=(4, 4), duration=(32.0, 32.0),
                                          overlap=0.25, seed=7)
    waveform = Simulator(config).render("test", 0).waveform
    waveform = waveform[:30 * cases.SAMPLE_RATE]
    output.parent.mkdir(parents=True, exist_ok=True)
    cases.write_wav(output, np.asarray(waveform))
    print(f"{output}: {len(waveform) / cases.SAMPLE_RATE:.1f} s")


def diarizen_state_of(model, template: dict) -> dict:
    """DiariZen's state dict of our `model` (WavLMSegmentation of DiariZen's architecture)

    The importer's conversion run backwards: `template` is a DiariZen state dict of the
    same structure (names, shapes, and the values of the tensors DiariZen stores but never
    uses); each tensor the conversion takes from it is replaced by the one of ours it
    became.
    """
    from pyannote_wavlm_prune.importers.diarizen import _convert, _Source

    taken: dict[int, str] = {}

    class Recording(_Source):
        def take(self, key):
            tensor = super().take(key)
            taken[id(tensor)] = key
            return tensor

    produced = _convert(Recording(template), model)
    ours = {name: tensor.detach() for name, tensor in model.state_dict().items()}
    state = {key: tensor.clone() for key, tensor in template.items()}

    def put(key: str, value) -> None:
        state[key] = value.reshape(template[key].shape).to(template[key].dtype).clone()

    structure = model.structure
    for name, tensor in produced.items():
        if name == "layer_weights":
            put("weight_sum.weight", ours[name])
        elif name.endswith("attention.gru_rel_pos_const"):  # the kept heads' values
            index = int(name.split(".")[4])
            key = f"wavlm_model.encoder.transformer.layers.{index}.attention.gru_rel_pos_const"
            state[key][:, list(structure.kept_heads[index])] = ours[name]
        elif ".self_attn.in_proj_" in name:  # DiariZen's separate Q, K, V projections
            block, kind = int(name.split(".")[2]), name.rsplit("_", 1)[1]
            for part, value in zip("QKV", ours[name].chunk(3, dim=0)):
                put(f"conformer.conformer_layer.{block}.mha.mha.linear{part}.{kind}", value)
        elif id(tensor) in taken:
            put(taken[id(tensor)], ours[name])
        else:
            raise RuntimeError(f"{name}: no DiariZen tensor to write it back to")
    return state


def train(work: Path, epochs: int) -> None:
    """The trained tiny model: DiariZen's architecture (random-0's hub), fine-tuned by this
    project on simulated conversations, written back in DiariZen's format as
    tests/data/diarizen/trained.pt (checked: importing it gives the fine-tuned model)."""
    import torch
    from diarizen_helpers import TINY_PRUNED

    from pyannote_wavlm_prune.cli import main as cli
    from pyannote_wavlm_prune.files import write_atomically
    from pyannote_wavlm_prune.importers.diarizen import (
        diarizen_model,
        load_state_dict,
        read_diarizen_config,
    )
    from pyannote_wavlm_prune.models.checkpoint import save_checkpoint
    from pyannote_wavlm_prune.models.wavlm_segmentation import WavLMSegmentation

    hub = work / "hubs" / cases.hub_name("random-0", "free")
    if not hub.is_dir():
        raise SystemExit(f"{hub} is missing: run `inputs {work}` first.")
    template = load_state_dict(hub / "pytorch_model.bin")
    model_args = read_diarizen_config(hub)["model"]["args"]
    data, stage = work / "training-data", work / "training"
    if cli(["simulate", "--preset", "quickstart", "--seed", "3", "--quiet", str(data)]):
        raise SystemExit("simulate failed")
    initial = stage / "initial.ckpt"
    save_checkpoint(diarizen_model(template, model_args, structure=TINY_PRUNED), initial)
    if cli(["finetune", "--database", str(data / "database.yml"),
            "--protocol", "Simulated.SpeakerDiarization.quickstart",
            "--output", str(stage / "finetune"), "--model", str(initial), "--keep-back-end",
            "--learning-rate", "wavlm=1e-3", "backend=2e-3", "--max-epochs", str(epochs),
            "--batch-size", "16", "--duration", "8", "--no-progress"]):
        raise SystemExit("finetune failed")
    trained = WavLMSegmentation.from_pretrained(stage / "finetune" / "model.ckpt").eval()
    state = diarizen_state_of(trained, template)
    back = diarizen_model(state, model_args, structure=TINY_PRUNED).state_dict()
    different = [name for name, tensor in trained.state_dict().items()
                 if not torch.equal(tensor, back[name])]
    if different:
        raise RuntimeError(f"the DiariZen state dict does not import back exactly: {different[:5]}")
    write_atomically(cases.FIXTURES / "trained.pt", lambda file: torch.save(state, file))
    print(f"{cases.FIXTURES / 'trained.pt'}: {sum(t.numel() for t in state.values())} values")


def diarizen_wavlm_config(structure: dict) -> dict:
    """The keyword arguments of DiariZen's wav2vec2_model for a structure description."""
    from diarizen_helpers import resolve

    config, resolved = resolve(structure)
    layers = config.num_hidden_layers
    return {
        "extractor_mode": "group_norm" if config.feat_extract_norm == "group" else "layer_norm",
        "extractor_conv_layer_config": [
            (channels, kernel, stride) for channels, kernel, stride in zip(
                resolved.conv_channels, config.conv_kernel, config.conv_stride)],
        "extractor_conv_bias": config.conv_bias,
        "encoder_embed_dim": config.hidden_size,
        "encoder_projection_dropout": 0.1,
        "encoder_pos_conv_kernel": config.num_conv_pos_embeddings,
        "encoder_pos_conv_groups": config.num_conv_pos_embedding_groups,
        "encoder_num_layers": layers,
        "encoder_use_attention": list(resolved.attention_layers),
        "encoder_use_feed_forward": list(resolved.ffn_layers),
        "encoder_total_num_heads": [config.num_attention_heads] * layers,
        "encoder_remaining_heads": [list(h) for h in resolved.kept_heads],
        "encoder_num_buckets": config.num_buckets,
        "encoder_max_distance": config.max_bucket_distance,
        "encoder_attention_dropout": 0.1,
        "encoder_ff_interm_features": list(resolved.ffn_widths),
        "encoder_ff_interm_dropout": 0.0,
        "encoder_dropout": 0.1,
        "encoder_layer_norm_first": config.do_stable_layer_norm,
        "encoder_layer_drop": 0.0,
        "aux_num_out": None,
        "normalize_waveform": config.do_stable_layer_norm,
        "extractor_prune_conv_channels": False,
        "encoder_prune_attention_heads": False,
        "encoder_prune_attention_layer": False,
        "encoder_prune_feed_forward_intermediate": False,
        "encoder_prune_feed_forward_layer": False,
        "use_layerwise_prune": False,
    }


def inputs(work: Path, large: bool) -> None:
    """Every case's inputs under `work`; their digests into tests/data/diarizen/inputs.json."""
    import torch
    from diarizen_helpers import TINY_PRUNED, write_hub

    from pyannote_wavlm_prune.files import write_json_atomically

    digests = cases.write_inputs(work)
    write_json_atomically(cases.FIXTURES / "inputs.json", digests)
    # DiariZen builds a WavLM from a named structure or from a file of its arguments
    wavlm_file = work / "wavlm_tiny.pt"
    torch.save({"config": diarizen_wavlm_config(TINY_PRUNED), "state_dict": {}}, wavlm_file)
    for config_toml in (work / "hubs").glob("*/config.toml"):
        config_toml.write_text(config_toml.read_text().replace(
            'wavlm_src = "custom_wavlm"', f'wavlm_src = "{wavlm_file}"'))
    if large:
        for name, (wavlm_src, seed) in LARGE_MODELS.items():
            write_hub(work / "large-hubs" / name, wavlm_src, seed=seed)
    print(f"inputs written under {work}")


def run_diarizen(work: Path, only: list[str] | None = None) -> None:
    """DiariZen's DiariZenPipeline on every case (or those of `only`, in that order): RTTM
    and clusters under work/diarizen/."""
    import numpy as np
    import torch
    from diarizen.pipelines.inference import DiariZenPipeline
    from pyannote.audio.pipelines import clustering as fork_clustering

    recorded: dict = {}
    vbx_call = fork_clustering.VBxClustering.__call__

    def recording_call(self, embeddings, segmentations=None, **kwargs):
        hard_clusters, soft_clusters, centroids = vbx_call(self, embeddings, segmentations,
                                                           **kwargs)
        recorded["hard_clusters"] = np.asarray(hard_clusters).tolist()
        recorded["segmentation_sum"] = float(np.nansum(segmentations.data))
        return hard_clusters, soft_clusters, centroids

    fork_clustering.VBxClustering.__call__ = recording_call  # scratch process only
    output = work / "diarizen"
    output.mkdir(exist_ok=True)
    embedding = str(work / "embedding" / "pytorch_model.bin")
    runs = [(name, work / "hubs" / cases.hub_name(*name.split(".")[0::2]),
             work / "audio" / f"{name.split('.')[1]}.wav") for name in cases.cases()]
    for model in LARGE_MODELS:
        if (work / "large-hubs" / model).is_dir():
            runs += [(f"{model}.{audio}.free", work / "large-hubs" / model,
                      work / "audio" / f"{audio}.wav") for audio in LARGE_AUDIO]
    if only:
        runs = sorted((run for run in runs if run[0] in only), key=lambda run: only.index(run[0]))
    pipelines: dict = {}
    for name, hub, audio in runs:
        if hub not in pipelines:
            pipelines[hub] = DiariZenPipeline(diarizen_hub=hub, embedding_model=embedding)
            _check_all_weights_loaded(pipelines[hub], hub / "pytorch_model.bin", torch)
        recorded.clear()
        start = time.perf_counter()
        result = pipelines[hub](str(audio), sess_name=name)
        (output / f"{name}.rttm").write_text(result.to_rttm())
        (output / f"{name}.json").write_text(json.dumps(recorded))
        print(f"{name}: {len(result.labels())} speakers, {len(result)} turns, "
              f"{time.perf_counter() - start:.1f} s", flush=True)


def _check_all_weights_loaded(pipeline, checkpoint: Path, torch) -> None:
    """DiariZen loads its checkpoint with strict=False: check that nothing was left random."""
    state = torch.load(checkpoint, map_location="cpu")
    model = pipeline._segmentation.model.state_dict()
    missing = sorted(set(model) - set(state))
    unused = sorted(set(state) - set(model))
    different = [k for k in state if k in model and not torch.equal(state[k], model[k].cpu())]
    if missing or unused or different:
        raise RuntimeError(f"{checkpoint}: missing {missing[:5]}, unused {unused[:5]}, "
                           f"not loaded {different[:5]}")


def store(work: Path) -> None:
    """DiariZen's outputs of the tiny cases into tests/data/diarizen/ (RTTM, clusters)."""
    target = cases.FIXTURES / "outputs"
    target.mkdir(parents=True, exist_ok=True)
    stored = [name for name in cases.cases() if (work / "diarizen" / f"{name}.rttm").is_file()]
    for name in stored:
        for suffix in (".rttm", ".json"):
            shutil.copy(work / "diarizen" / f"{name}{suffix}", target / f"{name}{suffix}")
    print(f"{len(stored)} of {len(cases.cases())} cases stored in {target}")


def compare(work: Path, label: str, pipeline_kind: str = "diarizen",
            only: list[str] | None = None) -> None:
    """DER of our imported pipeline (`pipeline_kind`: what import-diarizen --pipeline
    writes) against DiariZen's output, per case (as a table row)."""
    import inspect

    from diarizen_helpers import TINY_PRUNED
    from pyannote.audio import Audio, Pipeline
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    from pyannote_wavlm_prune.importers.diarizen import import_diarizen

    def annotation(turns):
        result = Annotation()
        for track, (start, duration, speaker) in enumerate(turns):
            result[Segment(start, start + duration), track] = speaker  # same-segment turns
        return result

    supports_pipeline = "pipeline" in inspect.signature(import_diarizen).parameters
    imported = work / f"ours-{label}"
    shutil.rmtree(imported, ignore_errors=True)
    rows = {}
    for rttm in sorted((work / "diarizen").glob("*.rttm")):
        name = rttm.stem
        if only and name not in only:
            continue
        model, audio, bounds = name.split(".")
        large = model in LARGE_MODELS
        hub = (work / "large-hubs" / model) if large else work / "hubs" / cases.hub_name(
            model, bounds)
        directory = imported / hub.name
        if not directory.exists():
            import_diarizen(hub, directory, embedding=work / "embedding" / "pytorch_model.bin",
                            structure=None if large else TINY_PRUNED,
                            **({"pipeline": pipeline_kind} if supports_pipeline else {}))
        pipeline = Pipeline.from_pretrained(directory)
        output = pipeline(str(work / "audio" / f"{audio}.wav"))
        ours = getattr(output, "speaker_diarization", output)
        ours_turns = cases.read_rttm(ours.to_rttm())
        # DiariZen's turns cut at the file's end, as ours are (they may run into the
        # zero-padded end of the last chunk, where no reference scores anything)
        end = Audio().get_duration(str(work / "audio" / f"{audio}.wav"))
        theirs_turns = [(start, min(start + duration, end) - start, speaker) for start, duration,
                        speaker in cases.read_rttm(rttm.read_text()) if start < end]
        reference, hypothesis = annotation(theirs_turns), annotation(ours_turns)
        der = DiarizationErrorRate()(reference, hypothesis) if theirs_turns else float(
            bool(ours_turns))
        same = cases.same_turns(ours_turns, theirs_turns)
        rows[name] = {"der": 100 * der, "identical": same,
                      "speakers": [len(hypothesis.labels()), len(reference.labels())]}
        print(f"| {name} | {100 * der:.2f} | {'yes' if same else 'no'} | "
              f"{len(hypothesis.labels())} / {len(reference.labels())} |", flush=True)
    (work / f"compare-{label}.json").write_text(json.dumps(rows, indent=1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("simulate")
    command.add_argument("output", type=Path)
    command = commands.add_parser("train")
    command.add_argument("work", type=Path)
    command.add_argument("--epochs", type=int, default=30)
    command = commands.add_parser("inputs")
    command.add_argument("work", type=Path)
    command.add_argument("--large", action="store_true")
    command = commands.add_parser("diarizen")
    command.add_argument("work", type=Path)
    command.add_argument("--only", nargs="+", metavar="CASE", help="these cases, in this order")
    commands.add_parser("store").add_argument("work", type=Path)
    command = commands.add_parser("compare")
    command.add_argument("work", type=Path)
    command.add_argument("--label", default="after")
    command.add_argument("--pipeline", choices=("diarizen", "pyannote"), default="diarizen")
    command.add_argument("--only", nargs="+", metavar="CASE", help="only these cases")
    args = parser.parse_args(argv)
    if args.command == "simulate":
        simulate(args.output)
    elif args.command == "train":
        train(args.work, args.epochs)
    elif args.command == "inputs":
        inputs(args.work, args.large)
    elif args.command == "diarizen":
        run_diarizen(args.work, args.only)
    elif args.command == "store":
        store(args.work)
    else:
        compare(args.work, args.label, args.pipeline, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
