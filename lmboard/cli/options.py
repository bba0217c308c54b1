"""Commands whose options are typed records: each group of flags is a frozen dataclass whose
fields carry their ``typer.Option`` in ``Annotated`` (defaults stay plain values), and the
command receives one record per group instead of dozens of parameters."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Any

from lmboard.errors import UsageError


def flag_name(cls: type, name: str) -> str:
    """The flag a field is given by on the command line (its declared name, else --field-name)."""
    hint = typing.get_type_hints(cls, include_extras=True)[name]
    for meta in getattr(hint, "__metadata__", ()):
        decls = [d for d in getattr(meta, "param_decls", None) or () if d.startswith("--")]
        if decls:
            return decls[0].split("/")[0]
    return "--" + name.replace("_", "-")


def command(*groups: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A typer command over the fields of ``groups``: the function is called with one
    record per group, in order."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        params, owners = [], []
        for cls in groups:
            hints = typing.get_type_hints(cls, include_extras=True)
            for f in dataclasses.fields(cls):
                params.append(inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                default=f.default, annotation=hints[f.name]))
                owners.append(cls)

        def run(**values: Any) -> Any:
            return fn(*(cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)}) for cls in groups))

        run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        run.__name__, run.__doc__ = fn.__name__, fn.__doc__
        return run

    return deco


def unused(record: Any, why: str) -> None:
    """Flags of a group that does not apply are an error when given, never silently ignored."""
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if value != f.default and not (f.default is None and value in ([], ())):
            raise UsageError(f"{flag_name(type(record), f.name)} does not apply to {why}")
