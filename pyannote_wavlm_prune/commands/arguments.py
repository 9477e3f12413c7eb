"""Command-line options whose defaults are read from the library, and the help that shows them.

A stage's defaults live in the signature (or class-level dict) of the function or class that
runs it; an option refers to them with `Default("module:Qualified.name", "parameter")`. The
reference is resolved when `--help` is printed or when the command runs (`resolve_defaults`,
the first line of its `run`), so that building the parser and checking the arguments import
nothing heavy.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
from collections.abc import Mapping
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


TRUST_HELP = ("unpickle checkpoints (and build the classes a pipeline's config.yaml names) with "
              "pickle's full power, as pyannote.audio's own loaders do: a checkpoint can then run "
              "any code it carries. Only for files whose origin you trust; without it, "
              "checkpoints load without running code, and one that needs more is refused, "
              "naming what it needs")


def add_trust_argument(parser: argparse.ArgumentParser) -> None:
    """--trust-checkpoints, on every command that loads checkpoints (the CLI reads it)."""
    parser.add_argument("--trust-checkpoints", action="store_true", help=TRUST_HELP)
