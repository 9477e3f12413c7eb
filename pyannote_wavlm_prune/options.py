"""Option dictionaries merged with class-level defaults (pyannote's style), checked once.

Every key is checked against those a function or class takes, and every value against its
type hint (`check_options`), so that a misspelt key or a value of the wrong type is named
before any work starts, in one line: "prune has unknown keys ['sparsty'] (did you mean
'sparsity'?): expected some of [...]".
"""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def closest(key: str, known: Iterable[str]) -> str:
    """" (did you mean 'KEY'?)" for the known key closest to `key` (difflib), or ""."""
    match = difflib.get_close_matches(str(key), [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def unknown_keys_error(name: str, unknown: Iterable[str], known: Iterable[str]) -> ValueError:
    """The one-line error for keys of `name` that are not among `known`."""
    unknown, known = sorted(map(str, unknown)), sorted(map(str, known))
    return ValueError(f"{name} has unknown keys {unknown}{closest(unknown[0], known)}: expected "
                      f"some of {known}.")


def merge_options(name: str, defaults: Mapping[str, Any], given: Mapping[str, Any] | None) -> dict:
    """`defaults` updated with `given`, or a ValueError naming the keys `defaults` lacks

    name: the option's name, for the error (e.g. "learning_rate").
    """
    given = dict(given or {})
    unknown = set(given) - set(defaults)
    if unknown:
        raise unknown_keys_error(name, unknown, defaults)
    return {**defaults, **given}


def parameter_hints(*functions: Callable) -> dict[str, Any]:
    """{parameter: type hint} of `functions` or classes (the first to name a parameter wins), without
    `self` and `*args`/`**kwargs`; a hint that cannot be evaluated reads as Any."""
    hints: dict[str, Any] = {}
    for function in functions:
        if isinstance(function, type):  # a class: its __init__'s parameters
            function = function.__init__
        try:
            resolved = typing.get_type_hints(function)
        except Exception:  # a hint naming what the module imports only for type checkers
            resolved = {}
        for name, parameter in inspect.signature(function).parameters.items():
            if name == "self" or name in hints or parameter.kind in (
                    parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            hints[name] = resolved.get(name, Any)
    return hints


def _describe(hint: Any) -> str:
    """A type hint in words: "an integer", "a list of numbers", "one of ['params', 'macs']"."""
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_describe(argument) for argument in arguments))
    if origin is typing.Literal:
        return f"one of {list(arguments)}"
    if hint is type(None) or hint is None:
        return "null"
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
             os.PathLike: "a path"}
    if hint in words:
        return words[hint]
    if origin is not None and isinstance(origin, type) and issubclass(origin, Mapping) \
            or hint in (dict, Mapping):
        return "a mapping"
    if origin is not None and isinstance(origin, type) and issubclass(origin, (list, tuple,
                                                                               collections.abc.Sequence)):
        item = _describe(arguments[0]) if arguments else "values"
        return f"a list of {item.removeprefix('an ').removeprefix('a ')}s" if arguments else "a list"
    return f"a {getattr(hint, '__name__', str(hint))}"


def matches(value: Any, hint: Any) -> bool:
    """Whether `value` (as YAML or a command line gives it) fits the type hint `hint`

    An int is a float, a bool is not an int, a string is a path; hints that are not plain
    classes (callables, type variables) accept anything.
    """
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, argument) for argument in arguments)
    if origin is typing.Literal:
        return value in arguments
    if hint is None or hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is os.PathLike:
        return isinstance(value, (str, os.PathLike))
    if origin is not None and isinstance(origin, type):
        if issubclass(origin, Mapping):
            return isinstance(value, Mapping) and (len(arguments) != 2 or all(
                matches(k, arguments[0]) and matches(v, arguments[1]) for k, v in value.items()))
        if issubclass(origin, collections.abc.Sequence) and origin is not str:
            return isinstance(value, (list, tuple)) and all(
                matches(item, arguments[0]) for item in value) if arguments else isinstance(
                value, (list, tuple))
        return isinstance(value, origin)
    if isinstance(hint, type):
        if hint is collections.abc.Sequence:
            return isinstance(value, (list, tuple))
        return isinstance(value, hint)
    return True


def check_options(name: str, given: Mapping[str, Any] | None, hints: Mapping[str, Any]) -> None:
    """Raise a ValueError naming the first key of `given` that `hints` lacks (with the closest
    known key), or whose value does not fit its hint

    name: where the options come from, for the error (e.g. "prune.task").
    """
    if given is not None and not isinstance(given, Mapping):
        raise ValueError(f"{name}={given!r}: expected a mapping of options.")
    given = dict(given or {})
    unknown = set(given) - set(hints)
    if unknown:
        raise unknown_keys_error(name, unknown, hints)
    for key, value in given.items():
        if not matches(value, hints[key]):
            raise ValueError(f"{name}.{key}={value!r}: expected {_describe(hints[key])}.")


def check_against_defaults(name: str, given: Mapping[str, Any] | None,
                           defaults: Mapping[str, Any]) -> None:
    """`check_options` for a dict option merged with class-level `defaults`: its keys are
    theirs, its values of their defaults' types (any type where the default is None)."""
    check_options(name, given, {key: Any if value is None else type(value)
                                for key, value in defaults.items()})
