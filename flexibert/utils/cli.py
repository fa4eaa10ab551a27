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

Settings that share a namespace with other flags take a ``prefix`` (``add_flags(group, SlurmSettings,
prefix="slurm_")`` makes ``partition`` the flag ``--slurm_partition``, parsed into ``args.slurm_partition``).
A repeatable flag is ``action="append"`` on a list or tuple field. ``flag_default=None`` shows the flag
as not given (no default in ``--help``) and, when it is not given, leaves the field's own default
(``setup: str = setting("", "...", flag_default=None)``).
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
        if action.default is None or action.default is False or isinstance(action, argparse._StoreConstAction):
            return action.help  # a switch's default is "not given", whatever value it stores
        return super()._get_help_string(action)


def setting(default: Any, help: str, *, flag: Any = _NO_FLAG, flag_default: Any = _NO_FLAG, **argparse_kwargs: Any) -> Any:
    """A dataclass field with its command-line help; ``flag`` renames (or, with None, hides) the flag; ``flag_default`` is the flag's."""
    metadata = {"help": help, "argparse": argparse_kwargs}
    if flag is not _NO_FLAG:
        metadata["flag"] = flag
    if flag_default is not _NO_FLAG:
        metadata["flag_default"] = flag_default
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


def _flag_default(field: dataclasses.Field) -> Any:
    """The flag's default: its own where the field declares one, else the field's."""
    if "flag_default" in field.metadata:
        return field.metadata["flag_default"]
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default


def add_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, settings_class: type, *, prefix: str = "",
              **defaults: Any) -> None:
    """Add one flag per field of ``settings_class``, named ``prefix`` + the field's flag; ``defaults`` override the fields' defaults."""
    hints = typing.get_type_hints(settings_class)
    for field, flag in _flag_fields(settings_class):
        kwargs: dict[str, Any] = {"dest": prefix + field.name, "help": field.metadata["help"], **field.metadata["argparse"]}
        default = defaults.pop(field.name) if field.name in defaults else _flag_default(field)
        annotation = hints[field.name]
        if annotation is bool:
            kwargs["action"] = "store_true" if flag == field.name else "store_false"
        else:
            kwargs.setdefault("type", _value_type(annotation))
            if flag != field.name and "choices" not in kwargs:
                kwargs.setdefault("metavar", f"{prefix}{flag}".upper())  # a renamed flag shows its own name in --help
            repeated = kwargs.get("action") == "append"  # one value per use of the flag, not several after it
            if not repeated and (typing.get_origin(annotation) in (list, tuple) or list in typing.get_args(annotation)):
                kwargs.setdefault("nargs", "+")
        parser.add_argument(f"--{prefix}{flag}", default=default, **kwargs)
    if defaults:
        raise TypeError(f"add_flags({settings_class.__name__}): no such settings {sorted(defaults)}")


def _not_given(field: dataclasses.Field, value: Any) -> bool:
    """Whether a flag declared with ``flag_default=None`` was left out (its field then keeps its own default)."""
    return value is None and field.metadata.get("flag_default", _NO_FLAG) is None


def from_flags(settings_class: type[T], args: argparse.Namespace, *, prefix: str = "", **values: Any) -> T:
    """The ``settings_class`` held by flags parsed with ``prefix``; ``values`` set fields that are not flags (or override them)."""
    found = {}
    for field in dataclasses.fields(settings_class):
        value = getattr(args, prefix + field.name, _NO_FLAG)
        if value is not _NO_FLAG and not _not_given(field, value):
            found[field.name] = value
    found.update(values)
    for name, annotation in typing.get_type_hints(settings_class).items():
        if typing.get_origin(annotation) is tuple and isinstance(found.get(name), list):
            found[name] = tuple(found[name])
    return settings_class(**found)
