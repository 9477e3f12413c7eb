"""`quickstart`: the whole method on a simulated corpus, offline, on a CPU."""

from __future__ import annotations

from .arguments import add_input, add_output, add_trust_argument


def add_arguments(parser):
    # both written into; neither may lie inside the other's files (the check compares them)
    add_output(parser, "--output", default="quickstart", writes=(), help="experiment directory")
    add_output(parser, "--data", default="data/simulated/quickstart", writes=(),
               help="corpus directory")
    add_input(parser, "--real-recordings", metavar="YML",
              help="database.yml of real recordings with references (the test subset of its one "
                   "protocol) on which both pipelines are scored besides pyannote's sample; "
                   "`make quickstart` gives tests/data/real/database.yml")
    parser.add_argument("--seed", type=int, default=0, help="seed of every stage")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    # the quiet command line (console.quiet) is the CLI's, for every command: --verbose is
    # the quickstart's older name for --debug's messages, kept for scripts that use it
    parser.add_argument("--verbose", action="store_true",
                        help="show the libraries' warnings and Lightning's messages (hidden by "
                             "default; --debug shows them for every command)")
    add_trust_argument(parser)


def run(args) -> int:
    from ..recipe.quickstart import (
        QuickstartSettings,
        purity_floor_line,
        results_table,
        run_quickstart,
        stage_times_table,
    )

    settings = QuickstartSettings(seed=args.seed, real_recordings=args.real_recordings)
    results = run_quickstart(args.output, args.data, settings=settings,
                             progress=not args.no_progress)
    print(results_table(results))
    print(purity_floor_line(results))
    print()
    print(stage_times_table(results))
    print(f"\nWhat survived pruning, per layer: {results['plot']}")
    print(f"Tuned pipeline of the pruned model (Pipeline.from_pretrained): {results['pipeline']}")
    print(f"Done in {results['minutes']:.1f} min.")
    return 0
