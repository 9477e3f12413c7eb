"""Where the pipeline class lived before `speaker_diarization.py`: kept importable.

Pickles of a pipeline, and code written for earlier releases, name
`pyannote_wavlm_prune.pipelines.offline.SpeakerDiarization` (exported config.yaml files name
`pyannote_wavlm_prune.pipelines.SpeakerDiarization`, which is unchanged). New code imports
from `pyannote_wavlm_prune.pipelines`.
"""

from .speaker_diarization import SpeakerDiarization

__all__ = ["SpeakerDiarization"]
