"""Model specs: ``BACKEND:NAME[,key=value...]`` or ``ALIAS[,key=value...]`` -> ModelSpec.

The backends are whatever the registry knows (built-in or plugin); each backend's
options are its own frozen dataclass, filled from the ``key=value`` text with the
field's type (``bool`` fields take true/false, ``int``/``float`` fields numbers).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from lmboard.errors import UsageError
from lmboard.lm import ModelSpec
from lmboard.registry import ALIASES, BACKENDS

_BOOL = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def parse_kv(text: str, what: str) -> dict[str, str]:
    """``a=1,b=2`` -> {"a": "1", "b": "2"}; a one-line error names the bad part."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise UsageError(f"{what}: expected key=value, got {part!r}")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _convert(value: str, hint: Any, where: str, key: str) -> Any:
    args = set(typing.get_args(hint)) or {hint}
    if type(None) in args and value.lower() in ("auto", "none"):
        return None  # an optional setting left to the backend
    if bool in args:
        if value.lower() not in _BOOL:
            raise UsageError(f"{where}: {key} must be true or false")
        return _BOOL[value.lower()]
    for t in (int, float):
        if t in args:
            try:
                return t(value)
            except ValueError:
                raise UsageError(f"{where}: {key} must be a number (got {value!r})") from None
    return value


def build_options(backend: str, options_class: type | None, opts: dict[str, str], where: str,
                  base: Any = None) -> Any:
    """The backend's options record from text; an unknown key or a bad value is one line."""
    if options_class is None:
        if opts:
            raise UsageError(f"{where}: unknown option {next(iter(opts))!r} (the {backend} backend takes none)")
        return base
    hints = typing.get_type_hints(options_class)
    names = {f.name for f in dataclasses.fields(options_class)}
    values = {}
    for k, v in opts.items():
        if k not in names:
            raise UsageError(f"{where}: unknown option {k!r} (the {backend} backend takes: {', '.join(sorted(names))})")
        values[k] = _convert(v, hints[k], where, k)
    record = dataclasses.replace(base, **values) if base is not None else options_class(**values)
    check = getattr(record, "validate", None)
    if check is not None:
        check(where)
    return record


def parse_model_spec(text: str) -> ModelSpec:
    """Parse a model spec. Backends are looked up in the registry (a plugin backend is
    named like a built-in one); anything else is an alias. ``label=NAME`` works everywhere."""
    text = text.strip()
    if not text:
        raise UsageError("model spec: empty")
    head, _, rest = text.partition(",")
    where = f"model spec {text!r}"
    opts = parse_kv(rest, where)
    label = opts.pop("label", None)
    backend, sep, name = head.partition(":")
    if sep and backend in BACKENDS:
        factory = BACKENDS.get(backend)
        options_class = getattr(factory, "options_class", None)
        split = getattr(options_class, "split_name", None)
        name, extra = split(name, where) if split else (name, {})
        if not name:
            raise UsageError(f"{where}: missing model name or path")
        options = build_options(backend, options_class, {**extra, **opts}, where)
        return ModelSpec(backend, name, options, label)
    alias = ALIASES.find(head)
    if alias is None:
        known = ", ".join(f"{b}:NAME" for b in BACKENDS.names())
        raise UsageError(f"{where}: unknown model alias {head!r} (aliases: {', '.join(ALIASES.names())}; "
                         f"or a backend: {known})")
    base: ModelSpec = alias()
    factory = BACKENDS.get(base.backend)
    options = build_options(base.backend, getattr(factory, "options_class", None), opts, where, base.options)
    return dataclasses.replace(base, options=options, label=label or base.label or head)
