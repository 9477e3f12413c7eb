"""Command-line options: defaults read from the library, values checked, inputs and outputs declared.

A stage's defaults live in the signature (or class-level dict) of the function or class that
runs it; an option refers to them with `Default("module:Qualified.name", "parameter")`. The
reference is resolved when `--help` is printed or when the command runs (`resolve_defaults`,
the first line of its `run`), so that building the parser and checking the arguments import
nothing heavy.

Numbers are read by types that say what they expect (`positive_int`, `fraction`, ...), and
every argument that names an input or an output is declared as such (`add_input`,
`add_output`): the command line checks them all (`check_paths`) before a command starts, so
that no command replaces or writes into what it was given to read.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from typing import Any


class Default:
    """The default of `parameter` of `target` ("module:Qualified.name"), or `target` itself

    Default("pyannote_wavlm_prune.tasks:DistillPrune", "sparsity") is 0.8;
    Default("pyannote_wavlm_prune.tasks:DistillPrune.LEARNING_RATE_DEFAULTS") is that dict.
    """

    def __init__(self, target: str, parameter: str | None = None):
        self.target = target
        self.parameter = parameter

    @cached_property
    def value(self) -> Any:
        module_name, _, qualified_name = self.target.partition(":")
        value: Any = importlib.import_module(module_name)
        for attribute in qualified_name.split("."):
            value = getattr(value, attribute)
        if self.parameter is None:
            return value
        default = inspect.signature(value).parameters[self.parameter].default
        if default is inspect.Parameter.empty:
            raise TypeError(f"{self.target}'s {self.parameter} has no default.")
        return default

    def __str__(self) -> str:
        return format_default(self.value)

    def __repr__(self) -> str:
        return f"Default({self.target!r}, {self.parameter!r})"


def format_default(value: Any) -> str:
    """How a default reads in --help: dicts as KEY=VALUE pairs, sequences space-separated."""
    if isinstance(value, Default):
        value = value.value
    if isinstance(value, Mapping):
        return " ".join(f"{key}={item}" for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return " ".join(str(item) for item in value)
    return str(value)


def resolve_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """`args` with every `Default` left by argparse replaced by its value (copied if mutable)."""
    for name, value in vars(args).items():
        if isinstance(value, Default):
            value = value.value
            setattr(args, name, dict(value) if isinstance(value, Mapping) else value)
    return args


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, unless there is nothing to show

    A None default means "decided elsewhere" (the teacher's, the task's): the option's help
    says which, in words. Flags (store_true) and empty lists show nothing either.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if isinstance(default, Default):
            default = default.value
        if "%(default)" in text or not action.option_strings or default is argparse.SUPPRESS \
                or default is None or (isinstance(default, (list, tuple)) and not default) \
                or isinstance(action, argparse._StoreTrueAction):
            return text
        return f"{text} (default: {format_default(default)})".strip()


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (the command line prints it, exit 2)."""

    def error(self, message: str):
        raise SystemExit(message)


def number(kind: type, low: float | None = None, high: float | None = None, low_open: bool = False,
           high_open: bool = False, expected: str | None = None, special: Iterable = ()) -> Callable:
    """An argparse type reading a `kind` (int or float) within [low, high] (bounds open if
    asked), or one of `special` values (e.g. -1 for "no limit"); its error says what was
    expected, in words: "expected a positive integer, got '0'"."""
    if expected is None:
        expected = "an integer" if kind is int else "a number"
    special = tuple(special)

    def read(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is not None and value in special:
            return value
        if value is None or (kind is float and not math.isfinite(value)) \
                or (low is not None and (value < low or (low_open and value == low))) \
                or (high is not None and (value > high or (high_open and value == high))):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    read.__name__ = expected  # what argparse would name the type
    return read


positive_int = number(int, 1, expected="a positive integer")
non_negative_int = number(int, 0, expected="a non-negative integer")
positive_float = number(float, 0, low_open=True, expected="a positive number")
non_negative_float = number(float, 0, expected="a non-negative number")
fraction = number(float, 0, 1, low_open=True, high_open=True, expected="a number in (0, 1)")
ratio = number(float, 0, 1, low_open=True, expected="a number in (0, 1]")


def key_values(text: str) -> tuple[str, Any]:
    """"KEY=VALUE" -> (KEY, VALUE): an int, a float (1e-3 too), else as YAML reads it"""
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, e.g. gates=0.05")
    for number in (int, float):
        try:
            return key, number(value)
        except ValueError:
            pass
    import yaml  # booleans and strings; YAML 1.1 would read 1e-3 as a string

    return key, yaml.safe_load(value)


def key_numbers(text: str) -> tuple[str, float]:
    """"KEY=VALUE" -> (KEY, VALUE) where VALUE is a positive number (a learning rate)"""
    key, value = key_values(text)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
            or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE with a positive number, "
                                         "e.g. gates=0.05")
    return key, value


class KeyValues(argparse.Action):
    """A dict option given as KEY=VALUE pairs, e.g. --learning-rate student=1e-3 gates=0.05

    Keys not given keep the library's defaults (the library merges and checks them).
    """

    def __init__(self, option_strings, dest, **kwargs):
        kwargs.setdefault("nargs", "+")
        kwargs.setdefault("metavar", "KEY=VALUE")
        kwargs.setdefault("type", key_values)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, dict(values))


class LearningRates(KeyValues):
    """--learning-rate KEY=VALUE pairs whose values are positive numbers."""

    def __init__(self, option_strings, dest, **kwargs):
        kwargs.setdefault("type", key_numbers)
        super().__init__(option_strings, dest, **kwargs)


def train_files(text: str) -> float | int:
    """"0.25" -> 0.25 (a fraction of the training files), "10" -> 10 (a number of them)"""
    try:
        value = int(text)
        if value >= 1:
            return value
    except ValueError:
        try:
            value = float(text)
            if 0.0 < value <= 1.0:
                return value
        except ValueError:
            pass
    raise argparse.ArgumentTypeError(f"{text!r}: expected a fraction in (0, 1] (e.g. 0.25) or "
                                     "a positive number of files (e.g. 10)")


def sparsity_target(text: str) -> float | tuple[str, float]:
    """"0.8" -> 0.8 (overall), "MODULE=0.8" -> ("MODULE", 0.8) (module-wise); in (0, 1)"""
    key, separator, value = text.rpartition("=")
    if not separator:
        return fraction(text)
    try:
        return key, fraction(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected MODULE=SPARSITY with a sparsity in (0, 1), e.g. "
            "cnn=0.5 transformer=0.8") from None


class SparsityTargets(argparse.Action):
    """--sparsity 0.8 (overall), or MODULE=SPARSITY pairs (module-wise), e.g. cnn=0.5 transformer=0.8"""

    def __init__(self, option_strings, dest, **kwargs):
        kwargs.setdefault("nargs", "+")
        kwargs.setdefault("metavar", "SPARSITY")
        kwargs.setdefault("type", sparsity_target)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        pairs = [value for value in values if isinstance(value, tuple)]
        if len(values) == 1 and not pairs:
            setattr(namespace, self.dest, values[0])
        elif len(pairs) == len(values):
            setattr(namespace, self.dest, dict(pairs))
        else:
            parser.error(f"{option_string}: expected one sparsity, or MODULE=SPARSITY pairs "
                         "only, e.g. cnn=0.5 transformer=0.8")


# ------------------------------------------------------------------------ inputs and outputs

# where a parser keeps its declared paths: {dest: (role, name, writes)}
PATHS = "declared_paths"


def _declare(container, role: str, flags: tuple[str, ...], name: str | None,
             writes: Iterable[str] | str | None, kwargs: dict) -> argparse.Action:
    action = container.add_argument(*flags, **kwargs)
    declared = dict(container.get_default(PATHS) or {})
    declared[action.dest] = (role, name or (action.option_strings or [action.dest.upper()])[0], writes)
    container.set_defaults(**{PATHS: declared})
    return action


def add_input(container, *flags: str, name: str | None = None, **kwargs) -> argparse.Action:
    """`container.add_argument(*flags, **kwargs)` for a path the command reads (a file, a
    directory; a hub name is not a path and is left alone)

    name: how errors name it (default: its first option string, or its dest upper-cased).
    """
    return _declare(container, "input", flags, name, None, kwargs)


def add_output(container, *flags: str, writes: Iterable[str] | str | None = None,
               name: str | None = None, **kwargs) -> argparse.Action:
    """`container.add_argument(*flags, **kwargs)` for a path the command writes

    writes: None for a file or directory written (or, with --overwrite, replaced) whole; the
    names written into it for a directory that is written into (a "module:NAME" reference
    to a list of them, read when the check runs).
    """
    return _declare(container, "output", flags, name, writes, kwargs)


def _paths(value) -> list:
    if value is None or isinstance(value, Default):
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def check_paths(args: argparse.Namespace) -> None:
    """Refuse any declared output of the command that is, contains or lies inside one of its
    declared inputs (`files.check_output_location`), or whose place cannot be written
    (`files.check_writable`: a read-only or full disk); run before the command does anything."""
    from ..files import check_output_location, check_writable

    declared = getattr(args, PATHS, None) or {}
    inputs = [(name, path) for dest, (role, name, _) in declared.items() if role == "input"
              for path in _paths(getattr(args, dest, None))]
    for dest, (role, name, writes) in declared.items():
        if role != "output":
            continue
        if isinstance(writes, str):
            writes = Default(writes).value
        for path in _paths(getattr(args, dest, None)):
            check_output_location(path, inputs, writes=writes, name=name)
            check_writable(path, into=writes is not None)


TRUST_HELP = ("unpickle checkpoints (and build the classes a pipeline's config.yaml names) with "
              "pickle's full power, as pyannote.audio's own loaders do: a checkpoint can then run "
              "any code it carries. Only for files whose origin you trust; without it, "
              "checkpoints load without running code, and one that needs more is refused, "
              "naming what it needs")


def add_trust_argument(parser: argparse.ArgumentParser) -> None:
    """--trust-checkpoints, on every command that loads checkpoints (the CLI reads it)."""
    parser.add_argument("--trust-checkpoints", action="store_true", help=TRUST_HELP)
