"""`recipe`: every stage of the method from one YAML file, resumable."""

from __future__ import annotations

from ..recipe.run import Recipe


def add_arguments(parser):
    parser.add_argument("recipe", help="recipe YAML file (see pyannote_wavlm_prune.recipe.Recipe)")
    parser.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    results = Recipe.from_yaml(args.recipe).run(progress=not args.no_progress)
    for stage, path in results.items():
        print(f"{stage}: {path}")
    return 0
