"""Import the authors' published DiariZen models into pyannote 4 pipeline directories.

A DiariZen hub repository (BUT-FIT/diarizen-wavlm-base-s80-md, -large-s80-md,
-large-s80-md-v2) holds::

    pytorch_model.bin   plain state dict: wavlm_model.*, weight_sum.weight, proj.*, lnorm.*,
                        conformer.conformer_layer.{i}.*, classifier.*
    config.toml         [model.args] (wavlm_src names the WavLM structure, chunk_size, ...),
                        [inference.args] (window, step, ...), [clustering.args] (VBx)
    plda/               xvec_transform.npz, plda.npz (pyannote's PLDA format)

`import_diarizen(src, output)` converts it, tensor by tensor, into a `WavLMSegmentation`
whose options reproduce DiariZen's computation (raw layer weights, the last CNN layer's
channel scale, norms over kept channels, waveform layer norm of eps 1e-5, see
`diarizen_model_options`), and writes a pipeline directory with `export_pipeline`.

Correspondence of the back end (DiariZen's Conformer without positional encoding computes
what torchaudio's does):

    weight_sum.weight (1, L+1)          layer_weights (L+1,)          (variant "diarizen")
    proj, lnorm                         projection, projection_norm
    conformer_layer.{i}.ffn1/ffn2       conformer_layers.{i}.ffn1/ffn2.sequential.{0: ln_norm,
                                                                       1: w_1, 4: w_2}
    conformer_layer.{i}.mha.ln_norm     conformer_layers.{i}.self_attn_layer_norm
    mha.mha.linearQ, linearK, linearV   self_attn.in_proj_weight / in_proj_bias (concatenated)
    mha.mha.linearO                     self_attn.out_proj
    conv.ln_norm                        conv_module.layer_norm
    conv.pointwise_conv1, depthwise_conv, bn_norm, pointwise_conv2
                                        conv_module.sequential.{0, 2, 3, 5}
    conformer_layer.{i}.ln_norm         conformer_layers.{i}.final_layer_norm
"""

from __future__ import annotations

import json
import math
import os
import tomllib
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from pyannote.audio.core.task import Problem, Resolution, Specifications

from ..deploy.embedding import check_embedding_runtime
from ..files import check_output_location
from ..frontends.published import published_structure, structure_with_family
from ..frontends.structure import Structure
from ..models.loading import unpickling
from ..models.wavlm_segmentation import WavLMSegmentation
from ..pipelines.export import export_pipeline
from ..pipelines.parts import checked_model, load_plda, local_or_hub_name
from ..settings import HYPER_PARAMETERS, SETTINGS, is_integer, is_number

CHECKPOINT_FILE = "pytorch_model.bin"
CONFIG_FILE = "config.toml"
PLDA_DIRECTORY = "plda"
# the speaker embedding DiariZen's pipeline uses (its inference.py)
DEFAULT_EMBEDDING = "pyannote/wespeaker-voxceleb-resnet34-LM"

# defaults of DiariZen's Model (model_wavlm_conformer.py) for what [model.args] may omit
MODEL_DEFAULTS = {
    "wavlm_layer_num": 13,
    "wavlm_feat_dim": 768,
    "attention_in": 256,
    "ffn_hidden": 1024,
    "num_head": 4,
    "num_layer": 4,
    "kernel_size": 31,
    "dropout": 0.1,
    "use_posi": False,
    "output_activate_function": False,
    "max_speakers_per_chunk": 4,
    "max_speakers_per_frame": 2,
    "chunk_size": 5,
    "sample_rate": 16000,
}
# [model.args] that only concern DiariZen's training or multi-channel input
_IGNORED_MODEL_ARGS = ("num_channels", "selected_channel")

# defaults of DiariZen's inference.py for what [inference.args] / [clustering.args] may omit
INFERENCE_DEFAULTS = {"segmentation_step": 0.1, "batch_size": 32, "apply_median_filtering": True}
CLUSTERING_DEFAULTS = {
    "method": "VBxClustering", "min_speakers": 1, "max_speakers": 20,
    "ahc_criterion": "distance", "ahc_threshold": 0.6, "Fa": 0.07, "Fb": 0.8, "lda_dim": 128,
    "max_iters": 20, "min_cluster_size": 13,
}
# what pyannote 4's VBxClustering and PLDA fix (no hyper-parameter for them)
_PYANNOTE_VBX_FIXED = {"ahc_criterion": "distance", "max_iters": 20, "lda_dim": 128}
# the pipelines `import_diarizen` writes: DiariZen's computation, or pyannote 4's
PIPELINES = ("diarizen", "pyannote")
# DiariZenPipeline's median filter (inference.py: size (1, 11, 1)) and clean-frame share
# (its fork's VBxClustering: min_frames_ratio=0.1)
DIARIZEN_MEDIAN_FILTER = 11
DIARIZEN_MIN_CLEAN_RATIO = 0.1


def diarizen_model_options() -> dict[str, Any]:
    """The `WavLMSegmentation` options under which it computes what DiariZen's model computes."""
    # raw layer weights (Linear(L+1, 1, bias=False)), feature_extractor.dummy_weight, plain
    # LayerNorms over the kept CNN channels, F.layer_norm of each waveform: `frontends.variants`
    return {"variant": "diarizen"}


# ----------------------------------------------------------------------------- reading


def resolve_source(src: str | os.PathLike) -> Path:
    """The local directory of a DiariZen hub repository: `src` itself, or its hub snapshot

    Parameters
    ----------
    src : str or path
        A local directory, or a hub name ("BUT-FIT/diarizen-wavlm-base-s80-md") resolved with
        `huggingface_hub.snapshot_download`: from the local cache only when offline
        (HF_HUB_OFFLINE=1), downloaded otherwise.

    Raises
    ------
    FileNotFoundError
        When `src` is neither an existing directory nor a hub repository that can be reached.
    """
    path = Path(src).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(
            f"{src} is a file: expected the directory of a DiariZen hub repository "
            f"({CHECKPOINT_FILE}, {CONFIG_FILE}, {PLDA_DIRECTORY}/) or a hub name.")
    name = os.fspath(src)
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise FileNotFoundError(
            f"{src} does not exist: expected the directory of a DiariZen hub repository or a "
            "hub name such as BUT-FIT/diarizen-wavlm-base-s80-md.")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception as cached_error:  # not in the cache
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        if offline:
            raise FileNotFoundError(
                f"{name} is not in the Hugging Face cache and the hub is disabled "
                "(HF_HUB_OFFLINE=1): download it once online (`hf download "
                f"{name}`), or pass the directory of a copy.") from cached_error
    try:
        return Path(snapshot_download(name))
    except Exception as error:
        raise FileNotFoundError(
            f"Could not download {name} from the Hugging Face hub ({error}): check the name "
            "and your network, or pass the directory of a local copy.") from error


def read_diarizen_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The content of a DiariZen `config.toml`, checked to have `[model.args]` with wavlm_src."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory} has no {CONFIG_FILE}: expected a DiariZen hub "
                                f"repository ({CHECKPOINT_FILE}, {CONFIG_FILE}, {PLDA_DIRECTORY}/).")
    try:
        with open(path, "rb") as file:
            config = tomllib.load(file)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path} is not valid TOML: {error}.") from error
    model_args = config.get("model", {}).get("args") if isinstance(config.get("model"), dict) else None
    if not isinstance(model_args, dict):
        raise ValueError(f"{path} has no [model.args] table: expected DiariZen's model arguments "
                         "(wavlm_src, chunk_size, max_speakers_per_chunk, ...).")
    if "wavlm_src" not in model_args:
        raise ValueError(f"{path} [model.args] has no wavlm_src: expected the name of the WavLM "
                         "structure (e.g. 'wavlm_base_s80_md').")
    return config


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The plain state dict of a `pytorch_model.bin` (tensors only, loaded without code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: expected DiariZen's {CHECKPOINT_FILE}.")
    try:
        # refused in one line naming what it needs (`models.loading.unpickling`), never run
        with unpickling(path, "DiariZen") as weights_only:
            state = torch.load(path, map_location="cpu", weights_only=weights_only)
    except ValueError:
        raise
    except Exception as error:
        raise ValueError(
            f"{path} cannot be read as a plain state dict (tensors only): "
            f"{' '.join(str(error).split())}. Expected DiariZen's {CHECKPOINT_FILE}.") from error
    if not isinstance(state, Mapping) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        what = type(state).__name__
        raise ValueError(f"{path} holds a {what}, not a state dict (names -> tensors): expected "
                         f"DiariZen's {CHECKPOINT_FILE}.")
    return dict(state)


def _structure_of(model_args: Mapping[str, Any], structure: Any) -> tuple[Any, dict, str]:
    """WavLMConfig, structure and a name for messages, from wavlm_src or `structure`."""
    if structure is None:
        config, resolved = published_structure(model_args["wavlm_src"])
        return config, resolved, repr(model_args["wavlm_src"])
    if isinstance(structure, (str, os.PathLike)):
        path = Path(structure)
        if not path.is_file():
            raise FileNotFoundError(f"structure file {path} does not exist: expected a YAML or "
                                    "JSON file with 'family' and the structure keys.")
        with open(path) as file:
            description = json.load(file) if path.suffix == ".json" else yaml.safe_load(file)
        config, resolved = structure_with_family(description)
        return config, resolved, f"from {path}"
    config, resolved = structure_with_family(structure)
    return config, resolved, "given as structure="


def _powerset_speakers(num_classes: int, max_per_frame: int) -> int:
    """The number of speakers per chunk whose powerset (<= max_per_frame) has num_classes."""
    for num_speakers in range(1, 64):
        size = sum(math.comb(num_speakers, k) for k in range(min(max_per_frame, num_speakers) + 1))
        if size == num_classes:
            return num_speakers
        if size > num_classes:
            break
    raise ValueError(
        f"classifier.weight has {num_classes} rows: no number of speakers gives that many "
        f"powerset classes with at most {max_per_frame} speakers per frame.")


# ----------------------------------------------------------------------------- converting


class _Source:
    """DiariZen's tensors, each taken at most once; what is missing or left is reported."""

    def __init__(self, state: Mapping[str, torch.Tensor]):
        self.state = state
        self.used: set[str] = set()
        self.missing: list[str] = []

    def take(self, key: str) -> torch.Tensor | None:
        if key not in self.state:
            self.missing.append(key)
            return None
        self.used.add(key)
        return self.state[key]

    def discard(self, key: str) -> None:
        """A tensor DiariZen stores but never uses in its forward pass (consumed, checked present)."""
        self.take(key)

    def has(self, key: str) -> bool:
        return key in self.state

    def unused(self) -> list[str]:
        return sorted(set(self.state) - self.used)


def _convert(source: _Source, model: WavLMSegmentation) -> dict[str, torch.Tensor]:
    """Our state dict, from DiariZen's: every tensor of `model` is produced once."""
    config = model.frontend.config
    structure = model.structure or Structure.full(config)
    target: dict[str, torch.Tensor | None] = {}

    def copy(ours: str, theirs: str) -> None:
        target[ours] = source.take(theirs)

    # WavLM: CNN, its last-channel scale, feature projection
    ours, theirs = "frontend.wavlm.", "wavlm_model."
    for index in range(len(config.conv_dim)):
        layer = f"feature_extractor.conv_layers.{index}."
        copy(f"{ours}{layer}conv.weight", f"{theirs}{layer}conv.weight")
        if config.conv_bias:
            copy(f"{ours}{layer}conv.bias", f"{theirs}{layer}conv.bias")
        if config.feat_extract_norm == "layer" or index == 0:
            for name in ("weight", "bias"):
                copy(f"{ours}{layer}layer_norm.{name}", f"{theirs}{layer}layer_norm.{name}")
    copy("frontend.conv_output_scale", f"{theirs}feature_extractor.dummy_weight")
    for name in ("layer_norm.weight", "layer_norm.bias", "projection.weight", "projection.bias"):
        copy(f"{ours}feature_projection.{name}", f"{theirs}encoder.feature_projection.{name}")

    # positional convolution: weight norm, stored as parametrization or as weight_g / weight_v
    transformer = f"{theirs}encoder.transformer."
    copy(f"{ours}encoder.pos_conv_embed.conv.bias", f"{transformer}pos_conv_embed.conv.bias")
    for ours_name, old_name in (("original0", "weight_g"), ("original1", "weight_v")):
        new_key = f"{transformer}pos_conv_embed.conv.parametrizations.weight.{ours_name}"
        old_key = f"{transformer}pos_conv_embed.conv.{old_name}"
        copy(f"{ours}encoder.pos_conv_embed.conv.parametrizations.weight.{ours_name}",
             old_key if source.has(old_key) and not source.has(new_key) else new_key)

    pre_ln = config.do_stable_layer_norm
    for name in ("weight", "bias"):
        if pre_ln:
            # after the last layer only: never part of the hidden states DiariZen sums
            source.discard(f"{transformer}layer_norm.{name}")
        else:
            copy(f"{ours}encoder.layer_norm.{name}", f"{transformer}layer_norm.{name}")

    for index in range(config.num_hidden_layers):
        layer_ours, layer_theirs = f"{ours}encoder.layers.{index}.", f"{transformer}layers.{index}."
        kept = structure.kept_heads[index]
        if index == 0:
            copy(f"{layer_ours}attention.rel_attn_embed.weight",
                 f"{layer_theirs}attention.rel_attn_embed.weight")
        if structure.attention_layers[index] and kept:
            for projection in ("q_proj", "k_proj", "v_proj", "out_proj"):
                for name in ("weight", "bias"):
                    copy(f"{layer_ours}attention.{projection}.{name}",
                         f"{layer_theirs}attention.{projection}.{name}")
            for name in ("weight", "bias"):
                copy(f"{layer_ours}attention.gru_rel_pos_linear.{name}",
                     f"{layer_theirs}attention.gru_rel_pos_linear.{name}")
            # stored for all H heads of the layer: the kept heads' values
            const = source.take(f"{layer_theirs}attention.gru_rel_pos_const")
            if const is not None:
                heads = config.num_attention_heads
                if tuple(const.shape) != (1, heads, 1, 1):
                    raise ValueError(
                        f"{layer_theirs}attention.gru_rel_pos_const has shape "
                        f"{tuple(const.shape)}: expected (1, {heads}, 1, 1), one value per "
                        "original head.")
                const = const[:, kept]
            target[f"{layer_ours}attention.gru_rel_pos_const"] = const
        elif structure.attention_layers[index]:
            raise ValueError(f"The structure keeps attention block {index} without heads: "
                             "DiariZen removes such blocks (expected attention_layers False).")
        for norm, present in (("layer_norm", structure.attention_layers[index]),
                              ("final_layer_norm", structure.ffn_layers[index])):
            for name in ("weight", "bias"):
                if pre_ln and not present:
                    # the norm of a removed pre-LN block: stored, never used
                    source.discard(f"{layer_theirs}{norm}.{name}")
                else:
                    copy(f"{layer_ours}{norm}.{name}", f"{layer_theirs}{norm}.{name}")
        if structure.ffn_layers[index]:
            for dense in ("intermediate_dense", "output_dense"):
                for name in ("weight", "bias"):
                    copy(f"{layer_ours}feed_forward.{dense}.{name}",
                         f"{layer_theirs}feed_forward.{dense}.{name}")

    # back end
    weight_sum = source.take("weight_sum.weight")
    target["layer_weights"] = None if weight_sum is None else weight_sum.reshape(-1)
    for ours_name, theirs_name in (("projection", "proj"), ("projection_norm", "lnorm"),
                                   ("classifier", "classifier")):
        for name in ("weight", "bias"):
            copy(f"{ours_name}.{name}", f"{theirs_name}.{name}")
    num_blocks = model.hparams.conformer["num_layers"]
    for index in range(num_blocks):
        block_ours, block_theirs = f"conformer.conformer_layers.{index}.", f"conformer.conformer_layer.{index}."
        for ffn in ("ffn1", "ffn2"):
            for position, module in ((0, "ln_norm"), (1, "w_1"), (4, "w_2")):
                for name in ("weight", "bias"):
                    copy(f"{block_ours}{ffn}.sequential.{position}.{name}",
                         f"{block_theirs}{ffn}.{module}.{name}")
        for name in ("weight", "bias"):
            copy(f"{block_ours}self_attn_layer_norm.{name}", f"{block_theirs}mha.ln_norm.{name}")
            copy(f"{block_ours}self_attn.out_proj.{name}", f"{block_theirs}mha.mha.linearO.{name}")
            parts = [source.take(f"{block_theirs}mha.mha.linear{part}.{name}") for part in "QKV"]
            target[f"{block_ours}self_attn.in_proj_{name}"] = (
                None if any(p is None for p in parts) else torch.cat(parts, dim=0))
            copy(f"{block_ours}conv_module.layer_norm.{name}", f"{block_theirs}conv.ln_norm.{name}")
            copy(f"{block_ours}final_layer_norm.{name}", f"{block_theirs}ln_norm.{name}")
            for position, module in ((0, "pointwise_conv1"), (2, "depthwise_conv"),
                                     (5, "pointwise_conv2")):
                copy(f"{block_ours}conv_module.sequential.{position}.{name}",
                     f"{block_theirs}conv.{module}.{name}")
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            copy(f"{block_ours}conv_module.sequential.3.{name}", f"{block_theirs}conv.bn_norm.{name}")
    return target


def convert_state_dict(
    state: Mapping[str, torch.Tensor], model: WavLMSegmentation, origin: str = CHECKPOINT_FILE
) -> None:
    """Load DiariZen's `state` into `model` (built with `diarizen_model_options()`), in place

    Every tensor of `state` must be used, every tensor of `model` produced, each with the
    shape `model` expects.

    Raises
    ------
    ValueError
        Naming the tensors that are missing, left unused (e.g. the positional-encoding
        table of `use_posi = true`, or gates of an unpruned DiariZen model) or of a shape
        that disagrees with the structure.
    """
    source = _Source(state)
    target = _convert(source, model)
    if source.missing:
        raise ValueError(
            f"{origin} lacks {len(source.missing)} tensors that the structure needs: "
            f"{source.missing[:8]}{' ...' if len(source.missing) > 8 else ''}. Expected a "
            "DiariZen state dict of this structure (check wavlm_src, or pass structure=).")
    unused = source.unused()
    if unused:
        raise ValueError(
            f"{origin} has {len(unused)} tensors that the import would leave unused: "
            f"{unused[:8]}{' ...' if len(unused) > 8 else ''}. Expected only the tensors of "
            "DiariZen's WavLM (of this structure) + Conformer model, without positional "
            "encoding (use_posi = false) or pruning gates.")
    expected = model.state_dict()
    unexpected = sorted(set(target) - set(expected))
    forgotten = sorted(set(expected) - set(target))
    if unexpected or forgotten:  # a bug of _convert, not of the user's file
        raise RuntimeError(f"DiariZen conversion is out of step with WavLMSegmentation: "
                           f"produced {unexpected[:5]}, forgot {forgotten[:5]}.")
    wrong = [
        f"{key} {tuple(tensor.shape)} (expected {tuple(expected[key].shape)})"
        for key, tensor in target.items() if tuple(tensor.shape) != tuple(expected[key].shape)
    ]
    if wrong:
        raise ValueError(
            f"{origin} has {len(wrong)} tensors whose shape disagrees with the structure "
            f"(our names): {wrong[:6]}{' ...' if len(wrong) > 6 else ''}. Check wavlm_src, "
            "or pass the structure of this model (structure=).")
    model.load_state_dict({key: tensor.to(expected[key].dtype) for key, tensor in target.items()},
                          strict=True)


def diarizen_model(
    state: Mapping[str, torch.Tensor],
    model_args: Mapping[str, Any],
    structure: Any = None,
    duration: float | None = None,
    origin: str = CHECKPOINT_FILE,
) -> WavLMSegmentation:
    """A WavLMSegmentation (eval mode) computing what DiariZen's model of `state` computes

    Parameters
    ----------
    state : dict
        DiariZen's state dict (pytorch_model.bin).
    model_args : dict
        `[model.args]` of its config.toml.
    structure : dict or path, optional
        The WavLM structure ({"family": "base" | "large", "conv_channels", "kept_heads",
        "ffn_widths", optional "attention_layers", "ffn_layers"}, or a YAML/JSON file of it)
        when `wavlm_src` is not a published name. Defaults to the structure wavlm_src names.
    duration : float, optional
        Chunk duration (s) of the model's specifications (the pipeline's window). Defaults
        to chunk_size.
    """
    args = {**MODEL_DEFAULTS, **model_args}
    if args["use_posi"]:
        raise ValueError("[model.args] use_posi = true: the Conformer's relative positional "
                         "encoding has no pyannote 4 counterpart (torchaudio's Conformer has "
                         "none); expected use_posi = false, as in every released model.")
    if args["output_activate_function"]:
        raise ValueError(f"[model.args] output_activate_function = "
                         f"{args['output_activate_function']!r}: expected false (released "
                         "models have no activation between Conformer and classifier).")
    if args["sample_rate"] != 16000:
        raise ValueError(f"[model.args] sample_rate = {args['sample_rate']}: expected 16000.")
    config, resolved, described = _structure_of(args, structure)
    if args["wavlm_layer_num"] != config.num_hidden_layers + 1:
        raise ValueError(
            f"[model.args] wavlm_layer_num = {args['wavlm_layer_num']} but the structure "
            f"{described} has {config.num_hidden_layers} layers: expected "
            f"{config.num_hidden_layers + 1} hidden states.")
    if args["wavlm_feat_dim"] != config.hidden_size:
        raise ValueError(f"[model.args] wavlm_feat_dim = {args['wavlm_feat_dim']} but the "
                         f"structure {described} has width {config.hidden_size}.")

    classifier = state.get("classifier.weight")
    if classifier is None or classifier.dim() != 2:
        raise ValueError(f"{origin} has no 2-d classifier.weight: expected DiariZen's "
                         "Linear(attention_in, powerset classes).")
    max_per_frame = int(args["max_speakers_per_frame"])
    num_speakers = _powerset_speakers(classifier.shape[0], max_per_frame)
    if num_speakers != args["max_speakers_per_chunk"]:
        raise ValueError(
            f"classifier.weight has {classifier.shape[0]} rows, the powerset of {num_speakers} "
            f"speakers (<= {max_per_frame} per frame), but [model.args] max_speakers_per_chunk "
            f"= {args['max_speakers_per_chunk']}.")

    unpruned = resolved.is_full
    model = WavLMSegmentation(
        wavlm=config.to_dict(),
        # the unpruned architecture keeps stock modules, so that gates can attach to it
        structure=None if unpruned else resolved,
        projection={"dimension": int(args["attention_in"])},
        conformer={
            "num_layers": int(args["num_layer"]), "num_heads": int(args["num_head"]),
            "ffn_dim": int(args["ffn_hidden"]),
            "depthwise_conv_kernel_size": int(args["kernel_size"]),
            "dropout": float(args["dropout"]),
        },
        **diarizen_model_options(),
    )
    model.specifications = Specifications(
        problem=Problem.MONO_LABEL_CLASSIFICATION,
        resolution=Resolution.FRAME,
        duration=float(duration if duration is not None else args["chunk_size"]),
        classes=[f"speaker#{index + 1}" for index in range(num_speakers)],
        powerset_max_classes=max_per_frame,
        permutation_invariant=True,
    )
    model.build()
    convert_state_dict(state, model, origin=origin)
    return model.eval()


# ----------------------------------------------------------------------------- pipeline


def _table(config: Mapping[str, Any], name: str, origin: str) -> Mapping[str, Any]:
    """config.toml's [NAME.args] (empty when absent), or a one-line error when not a table."""
    section = config.get(name, {})
    args = section.get("args", {}) if isinstance(section, Mapping) else section
    if not isinstance(args, Mapping):
        raise ValueError(f"{origin} [{name}.args] = {args!r}: expected a table.")
    return args


def _check_values(model_args: Mapping[str, Any], inference: Mapping[str, Any],
                  clustering: Mapping[str, Any], origin: str) -> None:
    """Refuse, in one line naming the key, a value of config.toml whose pipeline could not
    run (or would silently do something else): each through the pipeline's own table of
    settings (`settings.SETTINGS`, `HYPER_PARAMETERS`) where it becomes one."""
    window = inference.get("seg_duration", model_args["chunk_size"])
    checks = [
        ("model.args", "chunk_size", model_args["chunk_size"],
         lambda v: is_number(v, 0.0, low_open=True), "a duration > 0 (seconds)"),
        ("model.args", "selected_channel", model_args.get("selected_channel", 0),
         lambda v: is_integer(v, 0), "an integer >= 0 (a channel)"),
        ("inference.args", "seg_duration", window, lambda v: is_number(v, 0.0, low_open=True),
         "a duration > 0 (seconds)"),
        ("inference.args", "apply_median_filtering", inference["apply_median_filtering"],
         lambda v: isinstance(v, bool), "true or false"),
        ("clustering.args", "lda_dim", clustering["lda_dim"], lambda v: is_integer(v, 1),
         "an integer >= 1"),
    ]
    hyper = HYPER_PARAMETERS["clustering"]
    for key, ours in (("ahc_threshold", "threshold"), ("Fa", "Fa"), ("Fb", "Fb"),
                      ("min_cluster_size", "min_cluster_size")):
        checks.append(("clustering.args", key, clustering[key], *hyper[ours]))
    for table, key, ours, values in (
            ("inference.args", "segmentation_step", "segmentation_step", inference),
            ("inference.args", "batch_size", "segmentation_batch_size", inference),
            ("clustering.args", "min_speakers", "min_speakers", clustering),
            ("clustering.args", "max_speakers", "max_speakers", clustering)):
        checks.append((table, key, values[key], SETTINGS[ours].accepts, SETTINGS[ours].expected))
    for table, key, value, accepts, expected in checks:
        if not accepts(value):
            raise ValueError(f"{origin} [{table}] {key} = {value!r}: expected {expected}.")
    if clustering["min_speakers"] > clustering["max_speakers"]:
        raise ValueError(f"{origin} [clustering.args] min_speakers = {clustering['min_speakers']}"
                         f" exceeds max_speakers = {clustering['max_speakers']}: expected "
                         "min_speakers <= max_speakers.")


def pipeline_settings(config: Mapping[str, Any], origin: str = CONFIG_FILE) -> dict[str, Any]:
    """`export_pipeline` arguments (and what pyannote 4 cannot express) from config.toml

    Every value is checked first (`origin`, the file, names it in errors).

    Returns
    -------
    settings : dict
        "window" (s), "clustering", "params", "segmentation_step", "batch_size",
        "lda_dimension", "options" (the `SpeakerDiarization` options under which it computes
        what DiariZenPipeline computes, see `diarizen_options`) and "diarizen" (the settings
        recorded in config.yaml for reference).
    """
    model_args = {**MODEL_DEFAULTS, **config["model"]["args"]}
    inference = {**INFERENCE_DEFAULTS, **_table(config, "inference", origin)}
    clustering = {**CLUSTERING_DEFAULTS, **_table(config, "clustering", origin)}
    _check_values(model_args, inference, clustering, origin)
    window = float(inference.get("seg_duration", model_args["chunk_size"]))
    method = clustering["method"]
    if method == "VBxClustering":
        params = {"threshold": float(clustering["ahc_threshold"]), "Fa": float(clustering["Fa"]),
                  "Fb": float(clustering["Fb"])}
        for key, fixed in _PYANNOTE_VBX_FIXED.items():
            if clustering[key] != fixed:
                warnings.warn(f"[clustering.args] {key} = {clustering[key]!r}: pyannote 4's VBx "
                              f"uses {fixed!r} (no hyper-parameter for it).", stacklevel=3)
    elif method == "AgglomerativeClustering":
        params = {"method": "centroid", "min_cluster_size": int(clustering["min_cluster_size"]),
                  "threshold": float(clustering["ahc_threshold"])}
    else:
        raise ValueError(f"[clustering.args] method = {method!r}: expected VBxClustering or "
                         "AgglomerativeClustering (DiariZen's two).")
    record = {
        "window": window, "min_speakers": clustering["min_speakers"],
        "max_speakers": clustering["max_speakers"],
        "apply_median_filtering": bool(inference["apply_median_filtering"]),
    }
    if method == "VBxClustering":
        record.update({key: clustering[key] for key in ("ahc_criterion", "lda_dim", "max_iters")})
    return {
        "window": window,
        "clustering": method,
        "options": diarizen_options(method, inference, clustering,
                                    channel=model_args.get("selected_channel", 0)),
        "params": {"segmentation": {"min_duration_off": 0.0}, "clustering": params},
        "segmentation_step": float(inference["segmentation_step"]),
        "batch_size": int(inference["batch_size"]),
        "lda_dimension": int(clustering["lda_dim"]),
        "diarizen": record,
    }


def diarizen_options(method: str, inference: Mapping[str, Any],
                     clustering: Mapping[str, Any], channel: int = 0) -> dict[str, Any]:
    """`SpeakerDiarization` options computing what DiariZenPipeline computes

    From config.toml's [inference.args] (`apply_median_filtering`) and [clustering.args]
    (`min_speakers`, `max_speakers`), with DiariZen's fixed rules: the first channel, 10 %
    clean frames with its fall-back, and, for VBx, no k-means re-clustering, inactive
    speakers scored as active ones, the renumbering that makes unassigned speakers a speaker.
    `channel` is [model.args] selected_channel (DiariZen's 0 by default).
    Unlike DiariZen, turns are cut at the file's end (its turns can run into the zero-padded
    end of the last chunk, where there is no audio): the same turns within the file.
    """
    options: dict[str, Any] = {
        "median_filter": DIARIZEN_MEDIAN_FILTER if inference["apply_median_filtering"] else 1,
        "min_clean_ratio": DIARIZEN_MIN_CLEAN_RATIO,
        "clean_ratio_fallback": True,
        "min_speakers": int(clustering["min_speakers"]),
        "max_speakers": int(clustering["max_speakers"]),
        "channel": channel,
        "crop_to_audio": True,  # no turn after the file's end, in every pipeline we write
    }
    if method == "VBxClustering":
        options.update(inactive_speakers_last=False, recluster_to_bounds=False,
                       unassigned_as_speaker=True)
    return options


def import_diarizen(
    src: str | os.PathLike,
    output: str | os.PathLike,
    embedding: str | os.PathLike | None = None,
    structure: Mapping[str, Any] | str | os.PathLike | None = None,
    embedding_runtime: str | None = None,
    pipeline: str = "diarizen",
) -> Path:
    """Write a pyannote 4 pipeline directory from a DiariZen hub repository

    Parameters
    ----------
    src : str or path
        Directory of a DiariZen hub repository, or its hub name (see `resolve_source`).
        Only read, never modified.
    output : path
        Pipeline directory to write (must not exist): config.yaml,
        segmentation/pytorch_model.bin, plda/ and, for a local `embedding`, embedding/.
        It appears whole or not at all.
    embedding : str or path, optional
        A local pyannote checkpoint of the speaker embedding (file, or directory with
        pytorch_model.bin: copied into `output`), or a hub name written into config.yaml.
        Defaults to pyannote/wespeaker-voxceleb-resnet34-LM, DiariZen's.
    structure : dict or path, optional
        The WavLM structure, when `wavlm_src` names none of the published ones (see
        `diarizen_model`).
    embedding_runtime : str, optional
        How the pipeline runs its speaker embedding: "torch", "onnxruntime" or
        "onnxruntime-int8", written in config.yaml (see `export_pipeline`). Defaults to None:
        the model as it is.
    pipeline : str, optional
        "diarizen" (default): the pipeline computes what DiariZen's DiariZenPipeline computes
        (the options of `diarizen_options`, written in config.yaml); "pyannote": pyannote
        4's pipeline with DiariZen's models, window, step and clustering hyper-parameters.

    Returns
    -------
    output : Path
        The written directory.

    Raises
    ------
    FileExistsError, FileNotFoundError, ValueError
        Before anything is written: an existing `output`, a missing file, a config.toml
        without [model.args], an unknown structure, missing, unused or misshapen tensors.
    """
    output = Path(output)
    if output.exists() or output.is_symlink():
        raise FileExistsError(f"{output} exists: expected the path of a new pipeline directory.")
    check_embedding_runtime(embedding_runtime)
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline={pipeline!r}: expected one of {list(PIPELINES)}.")
    directory = resolve_source(src)
    check_output_location(output, [("the DiariZen repository", directory)])
    config = read_diarizen_config(directory)
    checkpoint = directory / CHECKPOINT_FILE
    plda_directory = directory / PLDA_DIRECTORY
    settings = pipeline_settings(config, str(directory / CONFIG_FILE))
    if settings["clustering"] == "VBxClustering" and not plda_directory.is_dir():
        raise FileNotFoundError(f"{directory} has no {PLDA_DIRECTORY}/ directory: VBx clustering "
                                "needs DiariZen's xvec_transform.npz and plda.npz.")
    state = load_state_dict(checkpoint)
    model = diarizen_model(state, config["model"]["args"], structure=structure,
                           duration=settings["window"], origin=str(checkpoint))

    plda = None
    if settings["clustering"] == "VBxClustering":
        plda = load_plda(plda_directory)
        if settings["lda_dimension"] > plda.dimension:
            raise ValueError(f"[clustering.args] lda_dim = {settings['lda_dimension']} exceeds "
                             f"the PLDA's dimension {plda.dimension} ({plda_directory}).")

    embedding_options: dict[str, Any]
    named = DEFAULT_EMBEDDING if embedding is None else local_or_hub_name(embedding, "embedding")
    if isinstance(named, Path):
        embedding_options = {"embedding": _checked_embedding(embedding, plda)}
    else:
        embedding_options = {"embedding_name": named}

    return export_pipeline(
        output,
        segmentation=model,
        plda=plda,
        clustering=settings["clustering"],
        params=settings["params"],
        segmentation_step=settings["segmentation_step"],
        embedding_exclude_overlap=True,  # DiariZen's pipeline always excludes overlap
        segmentation_batch_size=settings["batch_size"],
        embedding_batch_size=settings["batch_size"],
        embedding_runtime=embedding_runtime,
        diarization_options=settings["options"] if pipeline == "diarizen" else None,
        extra={"diarizen": {"source": os.fspath(src), "wavlm_src": str(
            config["model"]["args"]["wavlm_src"]), "pipeline": pipeline, **settings["diarizen"]}},
        **embedding_options,
    )


def _checked_embedding(embedding: str | os.PathLike, plda) -> Any:
    """The embedding model of a local checkpoint, checked against the PLDA's dimension."""
    model = checked_model(embedding, "embedding")
    dimension = getattr(model, "dimension", None)
    if plda is not None and isinstance(dimension, int) and dimension != plda.embedding_dimension:
        raise ValueError(f"embedding {embedding} gives {dimension}-dimensional embeddings but "
                         f"DiariZen's PLDA expects {plda.embedding_dimension} "
                         "(WeSpeaker ResNet34's 256).")
    return model
