"""Build frozen dataclasses from YAML mappings, rejecting unknown keys with the key path.

The core settings and every plugin's options go through `build`, so a bad value anywhere
fails start-up with the same kind of message: ``plugins[2].rate_limit: expected an integer``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union


class ConfigError(ValueError):
    """A config value is wrong; `path` names the key (``upstream.proxy.url``)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path or '<root>'}: {reason}")
        self.path = path
        self.reason = reason


class Secret:
    """A secret string that never shows itself in repr, str, logs or dumps."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    @property
    def fingerprint(self) -> str:
        """The last 4 characters, for logs: enough to tell two keys apart, not to use one."""
        return "…" + self._value[-4:] if len(self._value) >= 12 else "…"

    def __repr__(self) -> str:
        return f"Secret({self.fingerprint!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not key:
        return path
    return f"{path}.{key}" if path else key


def resolve_env_refs(value: Any, environ: Mapping[str, str], path: str = "") -> Any:
    """Replace every ``{$env: NAME}`` mapping with a `Secret` holding that variable's value."""
    if isinstance(value, Mapping):
        if set(value) == {"$env"}:
            name = value["$env"]
            if not isinstance(name, str) or not name:
                raise ConfigError(path, "$env needs a variable name")
            if name not in environ:
                raise ConfigError(path, f"environment variable {name} is not set")
            return Secret(environ[name])
        return {k: resolve_env_refs(v, environ, join(path, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_env_refs(v, environ, join(path, i)) for i, v in enumerate(value)]
    return value


def build(cls: type, data: Any, path: str = "") -> Any:
    """Make a `cls` dataclass from `data`; unknown keys and wrong types raise ConfigError."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(path, f"expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(map(str, data)) - set(fields))
    if unknown:
        raise ConfigError(join(path, unknown[0]), f"unknown key (known: {', '.join(sorted(fields))})")
    hints = typing.get_type_hints(cls)
    values = {name: convert(hints[name], data[name], join(path, name)) for name in fields if name in data}
    try:
        return cls(**values)
    except ConfigError as exc:  # raised by __post_init__, with a path relative to this mapping
        raise ConfigError(join(path, exc.path), exc.reason) from None
    except (TypeError, ValueError) as exc:
        missing = [n for n, f in fields.items() if n not in values and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ConfigError(join(path, missing[0]), "is required") from None
        raise ConfigError(path, str(exc)) from None


def convert(hint: Any, value: Any, path: str) -> Any:
    """Check `value` against the type `hint`, converting lists to tuples and mappings to dataclasses."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return convert(options[0], value, path)
        errors = []
        for option in options:
            try:
                return convert(option, value, path)
            except ConfigError as exc:
                errors.append(exc.reason)
        raise ConfigError(path, " or ".join(errors))
    if origin is Literal:
        if value not in args:
            raise ConfigError(path, f"expected one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"expected a list, got {type(value).__name__}")
        return tuple(convert(args[0], item, join(path, i)) for i, item in enumerate(value))
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(path, f"expected a mapping, got {type(value).__name__}")
        return types.MappingProxyType(dict(value))
    if dataclasses.is_dataclass(hint):
        return build(hint, value, path)
    if hint is Any:
        return value
    if hint is Secret:
        if isinstance(value, Secret):
            return value
        raise ConfigError(path, "secrets must be given as {$env: NAME}, never written in the file")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(path, f"expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(path, f"expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(path, f"expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(path, f"expected a string, got {value!r}")
    raise ConfigError(path, f"unsupported type {hint!r}")  # a bug in a Settings class, not in the file


def dump(value: Any) -> Any:
    """A plain, printable form of a settings tree, with every secret masked."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: dump(getattr(value, f.name)) for f in dataclasses.fields(value) if f.repr}
    if isinstance(value, Secret):
        return f"<secret {value.fingerprint}>"
    if isinstance(value, Mapping):
        return {str(k): dump(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [dump(v) for v in value]
    return value
