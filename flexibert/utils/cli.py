"""The command line every stage script shares: the help format, and flags made from settings dataclasses.

A setting is written once, as a dataclass field whose metadata holds its help text (and, where the
flag's name differs from the field's, the flag). :func:`add_flags` turns the fields into flags and
:func:`from_flags` turns parsed flags back into the dataclass, so a new setting is one field, not a
field, a flag and a renaming map.

    @dataclass
    class EvolutionSettings:
        population_size: int = setting(10, "the youngest models that form the population")

A ``bool`` field that defaults to False becomes a switch (``--name``); one that defaults to True
needs a ``flag`` that switches it off (``second_order: bool = setting(True, "...", flag="first_order")``
gives ``--first_order``). Fields with ``flag=None`` are not on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, TypeVar

T = TypeVar("T")
_NO_FLAG = object()


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show each flag's default (not the empty ones: None, False) and keep a docstring's example commands as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def setting(default: Any, help: str, *, flag: Any = _NO_FLAG, **argparse_kwargs: Any) -> Any:
    """A dataclass field with its command-line help; ``flag`` renames (or, with None, hides) the flag."""
    metadata = {"help": help, "argparse": argparse_kwargs}
    if flag is not _NO_FLAG:
        metadata["flag"] = flag
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _flag_fields(settings_class: type) -> list[tuple[dataclasses.Field, str]]:
    """(field, flag name) for every field of ``settings_class`` that is on the command line."""
    found = []
    for field in dataclasses.fields(settings_class):
        if "help" not in field.metadata:
            continue
        flag = field.metadata.get("flag", field.name)
        if flag is not None:
            found.append((field, flag))
    return found


def _value_type(annotation: Any) -> Any:
    """The type argparse converts to: ``int | None`` -> int, ``list[str]`` -> str."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (list, tuple):
        return args[0] if args else str
    if args:
        return _value_type(args[0])
    return annotation


def add_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, settings_class: type, **defaults: Any) -> None:
    """Add one flag per field of ``settings_class``; ``defaults`` override the fields' defaults (e.g. a recipe's)."""
    hints = typing.get_type_hints(settings_class)
    for field, flag in _flag_fields(settings_class):
        kwargs: dict[str, Any] = {"dest": field.name, "help": field.metadata["help"], **field.metadata["argparse"]}
        default = defaults.pop(field.name, field.default_factory() if field.default_factory is not dataclasses.MISSING
                               else field.default)
        annotation = hints[field.name]
        if annotation is bool:
            kwargs["action"] = "store_true" if flag == field.name else "store_false"
        else:
            kwargs.setdefault("type", _value_type(annotation))
            if typing.get_origin(annotation) in (list, tuple) or list in typing.get_args(annotation):
                kwargs.setdefault("nargs", "+")
        parser.add_argument(f"--{flag}", default=default, **kwargs)
    if defaults:
        raise TypeError(f"add_flags({settings_class.__name__}): no such settings {sorted(defaults)}")


def from_flags(settings_class: type[T], args: argparse.Namespace, **values: Any) -> T:
    """The ``settings_class`` held by parsed flags; ``values`` set fields that are not flags (or override them)."""
    names = {field.name for field in dataclasses.fields(settings_class)}
    found = {name: getattr(args, name) for name in names if hasattr(args, name)}
    found.update(values)
    for field in dataclasses.fields(settings_class):
        if typing.get_origin(typing.get_type_hints(settings_class)[field.name]) is tuple and isinstance(found.get(field.name), list):
            found[field.name] = tuple(found[field.name])
    return settings_class(**found)
