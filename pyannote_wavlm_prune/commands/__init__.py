"""Sub-commands of `pyannote-wavlm-prune` (one module each, see `pyannote_wavlm_prune.cli`)."""
