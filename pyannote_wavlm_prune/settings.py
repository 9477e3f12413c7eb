"""The settings of a diarization pipeline, checked once where they enter: one table.

`SETTINGS` lists every argument of `pipelines.SpeakerDiarization` beyond its models (their
defaults, what they accept, in words), `HYPER_PARAMETERS` its tuned hyper-parameters
(config.yaml's `params:`), and `check_speaker_counts` the speaker counts a call takes. The
class, `export_pipeline`, `save_pipeline`, `load_pipeline` (config.yaml), `import-diarizen`
(config.toml) and the command line all check what they are given here, so that a bad value
is refused before any work, in one line naming where it comes from, the key, the value and
what is expected:

    pipe/config.yaml: pipeline.params.segmentation_batch_size=-3: expected an integer >= 1
    (chunks per forward pass).

Imports nothing heavy: the command line reads its types from here before torch is loaded.
"""

from __future__ import annotations

import argparse
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .options import closest

CLUSTERINGS = ("AgglomerativeClustering", "KMeansClustering", "VBxClustering",
               "OracleClustering")
# the clusterings of `pipelines.clustering.CLUSTERING_CLASSES` (those with a clean-frame rule)
EMBEDDING_CLUSTERINGS = ("AgglomerativeClustering", "KMeansClustering", "VBxClustering")
# the names of `deploy.runtime.RUNTIMES` and `deploy.runtime.EMBEDDING_RUNTIMES` (which
# import torch; tests/test_hostile_inputs.py holds them equal)
SEGMENTATION_RUNTIMES = ("torch", "torch-int8", "onnxruntime", "onnxruntime-int8")
EMBEDDING_RUNTIMES = ("torch", "onnxruntime", "onnxruntime-int8")
# pyannote's AgglomerativeClustering linkage methods (scipy's)
LINKAGE_METHODS = ("average", "centroid", "complete", "median", "single", "ward", "weighted")


def is_integer(value: Any, least: int) -> bool:
    """Whether `value` is an integer (numpy's too, never a bool) >= `least`."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= least


def is_number(value: Any, low: float = -math.inf, high: float = math.inf,
              low_open: bool = False) -> bool:
    """Whether `value` is a finite number (never a bool, nor NaN) in [low, high] (or (low, high])."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value) and low <= value <= high
            and not (low_open and value == low))


def _optional(accepts: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or accepts(value)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_der_variant(value: Any) -> bool:
    return value is None or (isinstance(value, Mapping)
                             and set(value) <= {"collar", "skip_overlap"}
                             and is_number(value.get("collar", 0.0), 0.0)
                             and isinstance(value.get("skip_overlap", False), bool))


@dataclass(frozen=True)
class Setting:
    """One argument of the pipeline: its default, what it accepts (a test and its words) and,
    for options of one kind of clustering, the clusterings where it has an effect."""

    default: Any
    accepts: Callable[[Any], bool]
    expected: str
    clusterings: tuple[str, ...] = CLUSTERINGS


def _integer(least: int, what: str, default: Any, optional: bool = False,
             clusterings: tuple[str, ...] = CLUSTERINGS) -> Setting:
    def test(value: Any) -> bool:
        return is_integer(value, least)

    return Setting(default, _optional(test) if optional else test,
                   f"{'null or ' if optional else ''}an integer >= {least} ({what})",
                   clusterings)


def _flag(default: Any, what: str, clusterings: tuple[str, ...] = CLUSTERINGS) -> Setting:
    return Setting(default, _is_bool, f"true or false ({what})", clusterings)


SETTINGS: dict[str, Setting] = {
    "clustering": Setting("AgglomerativeClustering", lambda value: value in CLUSTERINGS,
                          f"one of {list(CLUSTERINGS)}"),
    "segmentation_step": Setting(0.1, lambda value: is_number(value, 0.0, 1.0, low_open=True),
                                 "a number in (0, 1] (the sliding window's step, as a share of "
                                 "its duration)"),
    "embedding_exclude_overlap": _flag(False, "embed each speaker's non-overlapped speech only"),
    "segmentation_batch_size": _integer(1, "chunks per forward pass", 32),
    "embedding_batch_size": _integer(1, "waveforms per forward pass", 32),
    "der_variant": Setting(None, _is_der_variant,
                           "null or a mapping of collar (a number >= 0) and skip_overlap "
                           "(true or false)"),
    "segmentation_runtime": Setting(None, _optional(lambda v: v in SEGMENTATION_RUNTIMES),
                                    f"one of {list(SEGMENTATION_RUNTIMES)} (or null: the "
                                    "checkpoint's own runtime)"),
    "embedding_runtime": Setting(None, _optional(lambda v: v in EMBEDDING_RUNTIMES),
                                 f"one of {list(EMBEDDING_RUNTIMES)} (or null: the model as "
                                 "it is)"),
    "chunkwise_embeddings": Setting(None, _optional(_is_bool), "null, true or false"),
    # the options beyond pyannote's (DIARIZATION_OPTIONS), at pyannote 4.0.7's behaviour
    "median_filter": _integer(1, "a kernel in frames; 1: no filtering, DiariZen 11", 1),
    "min_clean_ratio": Setting(0.2, lambda value: is_number(value, 0.0, 1.0),
                               "a share of the chunk's frames in [0, 1] (pyannote 0.2, "
                               "DiariZen 0.1)", EMBEDDING_CLUSTERINGS),
    "clean_ratio_fallback": _flag(False, "DiariZen true", EMBEDDING_CLUSTERINGS),
    "inactive_speakers_last": _flag(True, "VBx only", ("VBxClustering",)),
    "recluster_to_bounds": _flag(True, "VBx only", ("VBxClustering",)),
    "unassigned_as_speaker": _flag(False, "VBx only", ("VBxClustering",)),
    "min_speakers": _integer(1, "speakers", None, optional=True),
    "max_speakers": _integer(1, "speakers", None, optional=True),
    "channel": _integer(0, "the channel to diarize; null: their mean", None, optional=True),
    "crop_to_audio": _flag(True, "cut turns at the file's end"),
}
# the settings beyond pyannote's own arguments (`SpeakerDiarization.diarization_options`)
DIARIZATION_OPTIONS = ("median_filter", "min_clean_ratio", "clean_ratio_fallback",
                       "inactive_speakers_last", "recluster_to_bounds", "unassigned_as_speaker",
                       "min_speakers", "max_speakers", "channel", "crop_to_audio")
# arguments naming the models and where they come from: checked when they are loaded
PARTS = ("segmentation", "embedding", "plda", "token", "cache_dir")

# {group: {name: (test, expected)}}: what the hyper-parameters of config.yaml's `params:`
# accept (the search ranges pyannote's optimizer uses are narrower; these are the values
# that mean something)
HYPER_PARAMETERS: dict[str, dict[str, tuple[Callable[[Any], bool], str]]] = {
    "segmentation": {
        "min_duration_off": (lambda v: is_number(v, 0.0), "a duration >= 0 (seconds)"),
        "threshold": (lambda v: is_number(v, 0.0, 1.0), "a number in [0, 1]"),
    },
    "clustering": {
        "threshold": (lambda v: is_number(v, 0.0), "a finite number >= 0 (a distance)"),
        "method": (lambda v: v in LINKAGE_METHODS, f"one of {list(LINKAGE_METHODS)}"),
        "min_cluster_size": (lambda v: is_integer(v, 1), "an integer >= 1"),
        "Fa": (lambda v: is_number(v, 0.0, low_open=True), "a finite number > 0"),
        "Fb": (lambda v: is_number(v, 0.0, low_open=True), "a finite number > 0"),
    },
}
# the hyper-parameters a pipeline starts from when none are given (`default_parameters()`):
# min_duration_off 0, and per clustering, agglomerative values of
# pyannote/speaker-diarization-3.1, VBx values of pyannote 4.0.7's own defaults
DEFAULT_HYPER_PARAMETERS: dict[str, Any] = {
    "segmentation": {"min_duration_off": 0.0},
    "clustering": {
        "AgglomerativeClustering": {
            "method": "centroid",
            "min_cluster_size": 12,
            "threshold": 0.7045654963945799,
        },
        "KMeansClustering": {},
        "VBxClustering": {"threshold": 0.6, "Fa": 0.07, "Fb": 0.8},
        "OracleClustering": {},
    },
}


def _refuse(where: str, key: str, value: Any, expected: str) -> ValueError:
    prefix = f"{where}: " if where else ""
    return ValueError(f"{prefix}{key}={value!r}: expected {expected}.")


def check_setting(name: str, value: Any, where: str = "", key: str | None = None) -> Any:
    """`value` of setting `name`, or a one-line ValueError ("WHERE: KEY = VALUE: expected ...")."""
    if name not in SETTINGS:
        raise ValueError(f"{where + ': ' if where else ''}{key or name} is not a setting of the "
                         f"pipeline{closest(name, SETTINGS)}: expected one of {sorted(SETTINGS)}.")
    setting = SETTINGS[name]
    if not setting.accepts(value):
        raise _refuse(where, key or name, value, setting.expected)
    return value


def check_settings(given: Mapping[str, Any], where: str = "", prefix: str = "",
                   parts: tuple[str, ...] = PARTS) -> dict[str, Any]:
    """`given` (settings and `parts`), checked: unknown keys, bad values, min > max speakers,
    options that have no effect with the clustering; errors name `where` and `prefix` + key

    Returns `given` as a dict (missing settings keep their absence: defaults are the caller's).
    """
    if not isinstance(given, Mapping):
        raise _refuse(where, prefix.rstrip(".") or "settings", given, "a mapping of settings")
    given = dict(given)
    for key, value in given.items():
        if key in parts:
            continue
        if key not in SETTINGS:
            raise ValueError(
                f"{where + ': ' if where else ''}{prefix}{key} is not a setting of the pipeline"
                f"{closest(key, [*SETTINGS, *parts])}: expected some of "
                f"{sorted([*SETTINGS, *parts])}.")
        check_setting(key, value, where, f"{prefix}{key}")
    low, high = given.get("min_speakers"), given.get("max_speakers")
    if low is not None and high is not None and low > high:
        raise ValueError(f"{where + ': ' if where else ''}{prefix}min_speakers={low} exceeds "
                         f"{prefix}max_speakers={high}: expected min_speakers <= max_speakers.")
    clustering = given.get("clustering", SETTINGS["clustering"].default)
    for key, value in given.items():
        setting = SETTINGS.get(key)
        if setting is not None and clustering not in setting.clusterings \
                and value != setting.default:
            raise ValueError(
                f"{where + ': ' if where else ''}{prefix}{key}={value!r} has no effect with "
                f"clustering={clustering!r}: expected its default {setting.default!r}, or "
                f"clustering one of {list(setting.clusterings)}.")
    return given


def check_hyper_parameters(params: Any, where: str = "", prefix: str = "") -> dict[str, Any]:
    """config.yaml's `params:` ({"segmentation": {...}, "clustering": {...}}), checked against
    `HYPER_PARAMETERS`: a mapping of mappings, known names of finite, meaningful values (the
    pipeline says which of them it needs when it is instantiated)."""
    if not isinstance(params, Mapping):
        raise _refuse(where, prefix.rstrip(".") or "params", params,
                      "a mapping {segmentation: {...}, clustering: {...}}")
    for group, values in params.items():
        known = HYPER_PARAMETERS.get(group)
        if known is None:
            raise ValueError(f"{where + ': ' if where else ''}{prefix}{group} is not a group of "
                             f"hyper-parameters{closest(group, HYPER_PARAMETERS)}: expected some "
                             f"of {sorted(HYPER_PARAMETERS)}.")
        if not isinstance(values, Mapping):
            raise _refuse(where, f"{prefix}{group}", values, "a mapping of hyper-parameters")
        for name, value in values.items():
            if name not in known:
                raise ValueError(
                    f"{where + ': ' if where else ''}{prefix}{group}.{name} is not a "
                    f"hyper-parameter{closest(name, known)}: expected some of {sorted(known)}.")
            accepts, expected = known[name]
            if not accepts(value):
                raise _refuse(where, f"{prefix}{group}.{name}", value, expected)
    return {group: dict(values) for group, values in params.items()}


def check_config(config: Any, where: str) -> dict[str, Any]:
    """A pipeline's config.yaml (as read), checked: `pipeline: name:` and `params:` (its
    settings) and the top-level `params:` (hyper-parameters); errors name `where`."""
    if not isinstance(config, Mapping) or not isinstance(config.get("pipeline"), Mapping) \
            or "name" not in config["pipeline"]:
        raise ValueError(f"{where} does not describe a pipeline: expected a 'pipeline: name:' "
                         "entry (as export writes it).")
    settings = config["pipeline"].get("params")
    if not isinstance(settings, Mapping) or "segmentation" not in settings:
        raise _refuse(where, "pipeline.params", settings,
                      "a mapping of the pipeline's arguments, with segmentation (as export "
                      "writes it)")
    check_settings(settings, where, prefix="pipeline.params.")
    if "params" not in config:
        raise ValueError(f"{where} has no 'params:' entry: expected the pipeline's "
                         "hyper-parameters ({segmentation: {...}, clustering: {...}}, as export "
                         "writes them).")
    check_hyper_parameters(config["params"], where, prefix="params.")
    return dict(config)


def check_speaker_counts(num_speakers: Any = None, min_speakers: Any = None,
                         max_speakers: Any = None) -> None:
    """Raise a one-line ValueError for speaker counts a call cannot mean: each None or an
    integer >= 1, min <= max, and an exact number within the bounds given with it."""
    for name, value in (("num_speakers", num_speakers), ("min_speakers", min_speakers),
                        ("max_speakers", max_speakers)):
        if value is not None and not is_integer(value, 1):
            raise ValueError(f"{name}={value!r}: expected None or an integer >= 1.")
    if min_speakers is not None and max_speakers is not None and min_speakers > max_speakers:
        raise ValueError(f"min_speakers={min_speakers} exceeds max_speakers={max_speakers}: "
                         "expected min_speakers <= max_speakers.")
    if num_speakers is not None and not (min_speakers or 1) <= num_speakers <= (
            max_speakers or math.inf):
        raise ValueError(f"num_speakers={num_speakers} lies outside min_speakers={min_speakers}"
                         f", max_speakers={max_speakers}: expected an exact number within them, "
                         "or the bounds alone.")


def argument_type(name: str, read: Callable[[str], Any] = float) -> Callable[[str], Any]:
    """An argparse type reading setting `name` from the command line (`read`, then the table's
    check), whose error says what the setting expects."""

    def parse(text: str) -> Any:
        try:
            value = read(text)
        except ValueError:
            value = text
        setting = SETTINGS[name]
        if not setting.accepts(value):
            raise argparse.ArgumentTypeError(f"expected {setting.expected}, got {text!r}")
        return value

    parse.__name__ = name
    return parse
