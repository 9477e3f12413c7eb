"""`simulate`: build a simulated-conversation corpus as a pyannote.database protocol."""

from __future__ import annotations

import argparse
import json

from ..data.config import PRESETS
from ..data.simulate import CORPUS_ENTRIES, MARKER, simulate
from .arguments import add_input, add_output, number

CORPUS = (MARKER, *CORPUS_ENTRIES)  # what simulate writes into its root


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `pyannote-wavlm-prune simulate`."""
    add_output(parser, "root", nargs="?", name="ROOT", writes=CORPUS,
               help="output folder (default: data/simulated/<preset>)")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS),
                        help="corpus size and voices (tiny: seconds to build, for tests)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the whole corpus")
    parser.add_argument("--overlap", type=number(float, 0, 1, high_open=True,
                                                 expected="a ratio in [0, 1)"),
                        help="overlap ratio in [0, 1) (default: preset's)")
    parser.add_argument(
        "--speakers", type=_int_range, help="speakers per conversation: N or MIN-MAX"
    )
    parser.add_argument(
        "--noise", type=_float_range, metavar="SNR", help="noise SNR in dB: X or MIN-MAX"
    )
    parser.add_argument("--reverb", action="store_true", help="add synthetic reverberation")
    add_input(parser, "--source", help="folder of <speaker>/*.wav|flac (default: espeak-ng voices)")
    parser.add_argument("--name", help="protocol name (default: the preset's)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(parser=parser)


def run(args: argparse.Namespace) -> int:
    """Build the corpus `args` describes; print its database.yml and protocol name."""
    overrides = {} if args.name is None else {"name": args.name}
    root = args.root or f"data/simulated/{args.name or args.preset}"
    try:
        database_yml = simulate(
            root,
            preset=args.preset,
            seed=args.seed,
            overlap=args.overlap,
            num_speakers=args.speakers,
            noise_snr=args.noise,
            reverb=args.reverb,
            source=args.source,
            progress=not args.quiet,
            **overrides,
        )
    except (ValueError, FileExistsError) as error:
        args.parser.error(str(error))
    config = json.loads((database_yml.parent / MARKER).read_text())["parameters"]["config"]
    print(database_yml)
    print(f"{config['database']}.SpeakerDiarization.{config['name']}")
    return 0



def _int_range(text: str) -> int | tuple[int, int]:
    low, _, high = text.partition("-")
    return (int(low), int(high)) if high else int(low)


def _float_range(text: str) -> float | tuple[float, float]:
    # "-5" is a negative SNR, not a range: split on a dash that follows a digit
    for position in range(1, len(text)):
        if text[position] == "-" and text[position - 1].isdigit():
            return float(text[:position]), float(text[position + 1 :])
    return float(text)
