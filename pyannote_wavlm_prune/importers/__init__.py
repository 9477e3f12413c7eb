"""Importers of other checkpoint formats: a converter each, onto `WavLMSegmentation` options.

    diarizen.py   DiariZen's published pruned WavLM models (BUT-FIT/diarizen-wavlm-*)
"""
