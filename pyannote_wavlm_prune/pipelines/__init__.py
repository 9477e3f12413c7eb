from .offline import SpeakerDiarization

__all__ = ["SpeakerDiarization"]
