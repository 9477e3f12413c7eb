"""The imported DiariZen pipeline gives what DiariZen's own DiariZenPipeline gave, and the
options that make it so, one at a time.

tests/data/diarizen/outputs/ holds what DiariZen's code (its repository and pyannote 3.1
fork, torch 2.8) produced on tiny DiariZen-format models, made by
scripts/diarizen_fixtures.py; the inputs are rebuilt here (tests/diarizen_cases.py) and
checked against the digests of those DiariZen was given.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from diarizen_cases import (
    FIXTURES,
    canonical,
    cases,
    hub_name,
    read_rttm,
    same_turns,
    stored_digests,
    write_inputs,
)
from diarizen_helpers import TINY_PRUNED
from pyannote.audio import Audio, Pipeline
from pyannote.core import SlidingWindow, SlidingWindowFeature
from scipy.ndimage import median_filter

from pyannote_wavlm_prune import import_diarizen
from pyannote_wavlm_prune.pipelines import SpeakerDiarization, save_pipeline
from pyannote_wavlm_prune.pipelines.clustering import VBxClustering, renumber_clusters
from pyannote_wavlm_prune.pipelines.speaker_diarization import PIPELINE_OPTIONS

# what import-diarizen writes for DiariZen's config.toml (apply_median_filtering = true, VBx)
DIARIZEN_OPTIONS = {"median_filter": 11, "min_clean_ratio": 0.1, "clean_ratio_fallback": True,
                    "inactive_speakers_last": False, "recluster_to_bounds": False,
                    "unassigned_as_speaker": True, "min_speakers": 1, "max_speakers": 20,
                    "channel": 0}  # and pyannote 4's crop_to_audio=True: no turn after the end


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The rebuilt inputs of every case, and their digests."""
    directory = tmp_path_factory.mktemp("diarizen_inputs")
    return directory, write_inputs(directory)


@pytest.fixture(scope="module")
def imported(work, tmp_path_factory):
    """hub name -> our pipeline imported from it (default: DiariZen's computation)."""
    directory, _ = work
    root = tmp_path_factory.mktemp("imported")
    pipelines = {}

    def get(hub: str, **options):
        key = (hub, tuple(sorted(options.items())))
        if key not in pipelines:
            output = import_diarizen(directory / "hubs" / hub, root / f"{hub}-{len(pipelines)}",
                                     embedding=directory / "embedding" / "pytorch_model.bin",
                                     structure=TINY_PRUNED)
            pipelines[key] = Pipeline.from_pretrained(output)
            for name, value in options.items():
                _set_option(pipelines[key], name, value)
        return pipelines[key]

    return get


def _set_option(pipeline: SpeakerDiarization, name: str, value) -> None:
    setattr(pipeline, name, value)
    if hasattr(pipeline.clustering, name):
        setattr(pipeline.clustering, name, value)


def diarizen_rttm(case: str) -> list:
    return read_rttm((FIXTURES / "outputs" / f"{case}.rttm").read_text())


def within(turns: list, audio) -> list:
    """DiariZen's turns cut at the end of `audio` (the imported pipeline cuts there; DiariZen's
    can run into the zero-padded end of the last chunk)."""
    end = Audio().get_duration(str(audio))
    return [(start, min(start + duration, end) - start, label)
            for start, duration, label in turns if start < end]


_OUTPUTS: dict = {}


def ours(pipeline, audio, **call) -> list:
    """Our turns on `audio`, each (pipeline, options, audio, call) diarized once per session."""
    key = (id(pipeline), tuple(sorted(pipeline.diarization_options.items())),
           pipeline.embedding_path, str(audio), tuple(sorted(call.items())))
    if key not in _OUTPUTS:
        output = pipeline(str(audio), **call)
        _OUTPUTS[key] = read_rttm(output.speaker_diarization.to_rttm())
    return _OUTPUTS[key]


def test_rebuilt_inputs_are_those_diarizen_was_given(work):
    _, digests = work
    assert digests == stored_digests()


# the cases DiariZen's pipeline was run on (see scripts/diarizen_fixtures.py)
STORED = [case for case in cases() if (FIXTURES / "outputs" / f"{case}.rttm").is_file()]


@pytest.mark.parametrize("case", STORED)
def test_imported_pipeline_gives_diarizen_s_rttm_turn_for_turn(case, work, imported):
    directory, _ = work
    model, audio, bounds = case.split(".")
    pipeline = imported(hub_name(model, bounds))
    path = directory / "audio" / f"{audio}.wav"
    assert same_turns(ours(pipeline, path), within(diarizen_rttm(case), path))


def test_pyannote_s_embedding_path_gives_diarizen_s_rttm_too(work, imported):
    """The options act before the embeddings: per (chunk, speaker) pair as on the per-chunk
    path, the same turns."""
    directory, _ = work
    pipeline = imported(hub_name("biased-raw", "free"), chunkwise_embeddings=False)
    assert pipeline.embedding_path == "per-pair"
    path = directory / "audio" / "stereo.wav"
    assert same_turns(ours(pipeline, path), within(diarizen_rttm("biased-raw.stereo.free"), path))


def test_the_cases_exercise_speakers_overlap_silence_and_a_capped_count():
    """The biased model's output on the simulated conversation, as DiariZen gave it: two
    speakers (VBx's one cluster, and the local speakers its assignment left out, which
    DiariZen's renumbering makes a second), overlapping turns, silence between turns; with
    max_speakers = 1, no overlap."""
    biased = diarizen_rttm("biased.simulated.free")
    assert len({label for _, _, label in biased}) == 2
    turns = sorted((start, start + duration) for start, duration, _ in biased)
    assert any(b[0] < a[1] for a, b in zip(turns, turns[1:]))  # an overlap
    assert sum(duration for _, duration, _ in biased) < 30.0 * 2  # not speech everywhere
    clusters = np.array(json.loads((FIXTURES / "outputs" / "biased.simulated.free.json").read_text())[
        "hard_clusters"])
    assert set(np.unique(clusters)) == {0, 1} and np.all((clusters == 1).sum(1) == 1)
    capped = sorted((start, start + duration) for start, duration, _ in diarizen_rttm(
        "biased.simulated.one"))
    assert all(b[0] >= a[1] - 1e-3 for a, b in zip(capped, capped[1:]))  # no overlap


def test_the_trained_cases_exercise_several_vbx_clusters():
    """The trained model's output, as DiariZen gave it: speech, silence and overlap on the
    simulated conversation; DiariZen's clustering keeps one VBx cluster (two output speakers
    with the renumbered unassigned ones), the split clustering three (and so four numbers
    after the renumbering, the first of them the unassigned speakers)."""
    def clusters(case):
        return np.array(json.loads((FIXTURES / "outputs" / f"{case}.json").read_text())[
            "hard_clusters"])

    trained = diarizen_rttm("trained.simulated.free")
    turns = sorted((start, start + duration) for start, duration, _ in trained)
    assert any(b[0] < a[1] for a, b in zip(turns, turns[1:]))  # an overlap
    assert any(b[0] > a[1] + 0.5 for a, b in zip(turns, turns[1:]))  # a pause
    assert set(np.unique(clusters("trained.simulated.free"))) == {0, 1}
    for audio in ("sample", "EN2002a_30s", "simulated"):
        assert len({label for _, _, label in diarizen_rttm(f"trained-split.{audio}.free")}) == 3
        assert set(np.unique(clusters(f"trained-split.{audio}.free"))) >= {1, 2, 3}


# ----------------------------------------------------------------------------- options


def test_defaults_are_pyannote_s_and_import_writes_diarizen_s(work, tmp_path):
    directory, _ = work
    hub = directory / "hubs" / hub_name("biased", "free")
    embedding = directory / "embedding" / "pytorch_model.bin"
    diarizen = import_diarizen(hub, tmp_path / "diarizen", embedding=embedding,
                               structure=TINY_PRUNED)
    pyannote = import_diarizen(hub, tmp_path / "pyannote", embedding=embedding,
                               structure=TINY_PRUNED, pipeline="pyannote")
    params = yaml.safe_load((diarizen / "config.yaml").read_text())["pipeline"]["params"]
    assert {name: params[name] for name in DIARIZEN_OPTIONS} == DIARIZEN_OPTIONS
    params = yaml.safe_load((pyannote / "config.yaml").read_text())["pipeline"]["params"]
    assert not set(PIPELINE_OPTIONS) & set(params)
    loaded = Pipeline.from_pretrained(pyannote)
    assert loaded.diarization_options == {}
    assert {name: getattr(loaded, name) for name in PIPELINE_OPTIONS} == PIPELINE_OPTIONS
    # a saved pipeline keeps its options
    saved = save_pipeline(Pipeline.from_pretrained(diarizen), tmp_path / "saved")
    assert Pipeline.from_pretrained(saved).diarization_options == DIARIZEN_OPTIONS


def test_config_toml_decides_median_filtering_and_speaker_bounds(work, tmp_path):
    directory, _ = work
    hub = tmp_path / "hub"
    source = directory / "hubs" / hub_name("random-0", "free")
    import shutil

    shutil.copytree(source, hub)
    text = (hub / "config.toml").read_text()
    text = text.replace("apply_median_filtering = true", "apply_median_filtering = false")
    text = text.replace("min_speakers = 1", "min_speakers = 2").replace(
        "max_speakers = 20", "max_speakers = 5")
    (hub / "config.toml").write_text(text)
    output = import_diarizen(hub, tmp_path / "pipeline", structure=TINY_PRUNED,
                             embedding=directory / "embedding" / "pytorch_model.bin")
    pipeline = Pipeline.from_pretrained(output)
    assert (pipeline.median_filter, pipeline.min_speakers, pipeline.max_speakers) == (1, 2, 5)


def test_median_filter_filters_each_chunk_s_segmentation_over_its_kernel(imported, work):
    directory, _ = work
    pipeline = imported(hub_name("biased", "free"))
    file = {"audio": str(directory / "audio" / "simulated.wav"), "uri": "simulated"}
    filtered = pipeline.get_segmentations(file)
    _set_option(pipeline, "median_filter", 1)
    try:
        raw = pipeline.get_segmentations(file)
    finally:
        _set_option(pipeline, "median_filter", 11)
    np.testing.assert_array_equal(filtered.data,
                                  median_filter(raw.data, size=(1, 11, 1), mode="reflect"))
    assert not np.array_equal(filtered.data, raw.data)  # the biased model's decisions flicker
    windows = filtered.sliding_window, raw.sliding_window
    assert [(w.start, w.duration, w.step) for w in windows] == [
        (windows[1].start, windows[1].duration, windows[1].step)] * 2


def _segmentations(rows) -> SlidingWindowFeature:
    """(chunks, frames, speakers) from a list of (frames, speakers) 0/1 lists."""
    return SlidingWindowFeature(np.array(rows, dtype=float),
                                SlidingWindow(start=0.0, duration=1.0, step=1.0))


def test_clean_ratio_and_its_fall_back_choose_the_clustered_embeddings():
    clustering = VBxClustering(plda=None)
    # 10 frames, 2 chunks: speaker 0 alone on 1 frame (10 %) of chunk 0, speaker 1 inactive;
    # chunk 1: speaker 0 alone on 3 frames (30 %), speaker 1 only in overlap
    chunk0 = [[1, 0]] + [[0, 0]] * 9
    chunk1 = [[1, 0]] * 3 + [[1, 1]] * 2 + [[0, 0]] * 5
    segmentations = _segmentations([chunk0, chunk1])
    embeddings = np.arange(8.0).reshape(2, 2, 2)
    for ratio, fallback, expected in [(0.2, False, [(1, 0)]),
                                      (0.1, False, [(0, 0), (1, 0)]),
                                      (0.2, True, [(0, 0), (1, 0), (1, 1)]),  # fewer than 2
                                      (0.1, True, [(0, 0), (1, 0)])]:
        clustering.min_clean_ratio, clustering.clean_ratio_fallback = ratio, fallback
        _, chunks, speakers = clustering.filter_embeddings(embeddings, segmentations)
        assert list(zip(chunks.tolist(), speakers.tolist())) == expected, (ratio, fallback)


def test_inactive_speakers_last_keeps_clusters_for_active_speakers(monkeypatch):
    """One cluster, two local speakers of which only speaker 1 speaks; speaker 0's embedding is
    the closer to the centroid: scored last, it leaves the cluster to speaker 1."""
    clustering = VBxClustering(plda=None)
    soft = np.array([[[0.9], [0.5]]])
    segmentations = _segmentations([[[0, 1]] * 4])
    for last, expected in ((True, [[-2, 0]]), (False, [[0, -2]])):
        scores = soft.copy()
        if last:
            scores[segmentations.data.sum(1) == 0] = scores.min() - 1.0
        assert clustering.constrained_argmax(scores).tolist() == expected
    # the same rule inside VBxClustering.__call__, with its options
    assert VBxClustering.inactive_speakers_last is True


def test_unassigned_speakers_become_one_more_cluster_when_renumbered():
    hard = np.array([[0, -2, 2], [2, 0, -2]], dtype=np.int8)
    centroids = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    renumbered, rows = renumber_clusters(hard, centroids)
    # -2 is the first cluster, 0 and 2 follow; cluster 1, which nobody got, disappears
    assert renumbered.tolist() == [[1, 0, 2], [2, 1, 0]]
    np.testing.assert_array_equal(rows, [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])


@pytest.mark.parametrize("options, message", [
    ({"median_filter": 0}, r"median_filter=0: expected an integer >= 1 \(a kernel in frames"),
    ({"min_clean_ratio": 1.5}, r"min_clean_ratio=1.5: expected a share .* in \[0, 1\]"),
    ({"channel": -1}, "channel=-1: expected null or an integer >= 0"),
    ({"min_speakers": 3, "max_speakers": 2}, "min_speakers=3 exceeds max_speakers=2"),
    ({"unassigned_as_speaker": True, "clustering": "AgglomerativeClustering"},
     "unassigned_as_speaker=True has no effect with clustering='AgglomerativeClustering'"),
    ({"crop_to_audio": "yes"}, "crop_to_audio='yes': expected true or false"),
])
def test_bad_options_are_refused_naming_them(options, message, work):
    directory, _ = work
    from helpers import random_wespeaker

    from pyannote_wavlm_prune.importers.diarizen import (
        diarizen_model,
        load_state_dict,
        read_diarizen_config,
    )

    hub = directory / "hubs" / hub_name("random-0", "free")
    model = diarizen_model(load_state_dict(hub / "pytorch_model.bin"),
                           read_diarizen_config(hub)["model"]["args"], structure=TINY_PRUNED)
    options = {"clustering": "VBxClustering", "plda": hub / "plda", **options}
    with pytest.raises(ValueError, match=message):
        SpeakerDiarization(segmentation=model, embedding=random_wespeaker(), **options)


# --------------------------------------------------------------- channel, cropping, bounds


def _frames(pipeline, audio, **call) -> np.ndarray:
    """(frames, speakers) 0/1 discrete diarization of `audio` (before binarisation)."""
    recorded = {}

    def hook(step, artefact, file=None, total=None, completed=None):
        if step == "discrete_diarization":
            recorded["data"] = np.asarray(artefact.data)

    pipeline(str(audio), hook=hook, **call)
    return recorded["data"]


def test_channel_diarizes_that_channel_and_none_downmixes(work, imported, tmp_path):
    """The stereo file is 20 s of the simulated conversation (left) and of pyannote's sample
    (right): channel 0 and 1 give what each channel alone, as a mono file, gives; None (the
    downmix) neither; on a mono file the option changes nothing."""
    from diarizen_cases import read_wav, write_wav

    directory, _ = work
    stereo = directory / "audio" / "stereo.wav"
    left, right = tmp_path / "left.wav", tmp_path / "right.wav"
    waveform = read_wav(stereo)
    write_wav(left, waveform[:, :1])
    write_wav(right, waveform[:, 1:])
    hub = hub_name("biased", "free")
    first, second = imported(hub), imported(hub, channel=1)
    downmix = imported(hub, channel=None)
    assert first.channel == 0
    by_channel = [canonical(ours(first, stereo)), canonical(ours(second, stereo))]
    assert by_channel == [canonical(ours(first, left)), canonical(ours(first, right))]
    mixed = canonical(ours(downmix, stereo))
    assert mixed not in by_channel
    assert by_channel[0] != by_channel[1]
    short = directory / "audio" / "short.wav"
    assert canonical(ours(downmix, short)) == canonical(ours(first, short))


def test_crop_to_audio_cuts_only_what_lies_after_the_end(work, imported):
    """On the 6 s file (one 16 s chunk, zero-padded), the unfiltered biased model's turns run
    past the end in DiariZen's output: left uncropped, ours are DiariZen's; cropped, the same
    turns cut at the end, and nothing else changes."""
    directory, _ = work
    path = directory / "audio" / "short.wav"
    end = Audio().get_duration(str(path))
    theirs = diarizen_rttm("biased-raw.short.free")
    assert any(start + duration > end + 0.1 for start, duration, _ in theirs)  # can fail
    hub = hub_name("biased-raw", "free")
    uncropped = ours(imported(hub, crop_to_audio=False), path)
    cropped = ours(imported(hub), path)
    assert same_turns(uncropped, theirs)
    assert same_turns(cropped, within(uncropped, path))
    assert max(start + duration for start, duration, _ in cropped) <= end + 1e-3
    # turns ending before the file does are untouched
    before = [turn for turn in uncropped if turn[0] + turn[1] < end]
    assert before and set(canonical(before)) <= set(canonical(cropped))


def test_recluster_to_bounds_acts_only_outside_the_bounds(work, imported):
    """On the simulated conversation VBx keeps one cluster (see
    test_the_cases_exercise_speakers_overlap_silence_and_a_capped_count), and DiariZen's renumbering makes
    the local speakers left without it a second output speaker (DiariZen's output: 2
    speakers). Asked for at least 3, k-means re-clustering (pyannote's rule) gives 3;
    DiariZen's rule (recluster_to_bounds=False) ignores the bound: the turns without it.
    Within the bounds the option changes nothing."""
    directory, _ = work
    path = directory / "audio" / "simulated.wav"
    hub = hub_name("biased", "free")
    diarizen, pyannote = imported(hub), imported(hub, recluster_to_bounds=True)
    free = canonical(ours(diarizen, path))
    assert len({label for *_, label in free}) == 2
    assert canonical(ours(pyannote, path)) == free  # bounds 1-20 hold VBx's count
    assert canonical(ours(diarizen, path, min_speakers=3)) == free
    reclustered = canonical(ours(pyannote, path, min_speakers=3))
    assert len({label for *_, label in reclustered}) == 3


def test_max_speakers_caps_the_count_and_changes_nothing_else(work, imported):
    """max_speakers = 1 (DiariZen caps the instantaneous count by its max_speakers too), on
    the unfiltered biased model (2.7 s of overlap on the simulated conversation):
    where the uncapped output has one speaker or none, the same frames; where it has two,
    one of those two. The pipeline's bounds are the call's when the call gives none."""
    directory, _ = work
    path = directory / "audio" / "simulated.wav"
    free = _frames(imported(hub_name("biased-raw", "free")), path)
    capped = _frames(imported(hub_name("biased-raw", "one")), path)
    assert imported(hub_name("biased-raw", "one")).max_speakers == 1
    overlap = free.sum(1) >= 2
    assert overlap.sum() > 10  # the biased model overlaps: the cap has work to do
    assert capped.shape == free.shape and capped.sum(1).max() == 1
    np.testing.assert_array_equal(capped[~overlap], free[~overlap])
    assert np.all(capped[overlap].sum(1) == 1) and np.all(capped[overlap] <= free[overlap])
    # the same cap from the call, on a pipeline without bounds
    np.testing.assert_array_equal(
        _frames(imported(hub_name("biased-raw", "free")), path, max_speakers=1), capped)
