"""Typed YAML: a tree of frozen dataclasses loaded from a YAML file and dotted `key=value` overrides.

Loading is strict: an unknown key, a wrong type or an out-of-range value raises `ConfigError`
naming the dotted key, the value and where it came from (the file or the `--set` override).
Types come from the annotations (bool, int, float, str, Literal, Optional, list, nested
dataclasses; an int is accepted for a float, nothing else is converted); ranges from each
field's `setting(default, ge=..., gt=..., le=..., lt=...)`. Rules that look at more than one
field are plain functions `rule(root, fail)` handed to `load`, run in order on the built tree.

Nothing here knows the pipeline's sections: pipeline/config.py is the schema.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import re
import types
import typing
from contextlib import contextmanager
from dataclasses import field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence, TypeVar, Union

import yaml

from pipeline.arguments import ArgumentError

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value was rejected. The message names the key, the value and its origin."""

    def __init__(self, key: str, value: Any, origin: str, problem: str):
        self.key, self.value, self.origin, self.problem = key, value, origin, problem
        shown = _short_repr(value)
        super().__init__(f"{origin}: {key} = {shown}: {problem}")


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ----------------------------------------------------------------------------------------------
# Declaring fields


def setting(default: Any, *, ge=None, gt=None, le=None, lt=None):
    """A dataclass field with a default (lists copied) and bounds checked on load (on every item
    of a list)."""
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    if dataclasses.is_dataclass(default):
        return field(default_factory=type(default), metadata=meta)
    return field(default=default, metadata=meta)


def with_defaults(base: type[T], **defaults: Any) -> type[T]:
    """A subclass of the dataclass `base` whose named fields take other defaults, keeping their
    type, bounds and place: for sections that share fields but not their defaults."""
    fields = {f.name: f for f in dataclasses.fields(base)}
    unknown = sorted(set(defaults) - set(fields))
    if unknown:
        raise TypeError(f"{base.__name__} has no field(s) {unknown}")
    namespace: dict[str, Any] = {"__module__": base.__module__, "__annotations__": {}}
    for name, value in defaults.items():
        namespace["__annotations__"][name] = fields[name].type
        namespace[name] = setting(value, **fields[name].metadata)
    return dataclasses.dataclass(frozen=True)(type(base.__name__, (base,), namespace))


# ----------------------------------------------------------------------------------------------
# Where values came from, and rules


class Origins:
    """Remembers where each dotted key was set, so errors can name the file or `--set`."""

    def __init__(self, default: str):
        self.default = default
        self.by_key: dict[str, str] = {}

    def __call__(self, key: str) -> str:
        parts = key.replace("[", ".[").split(".")
        for i in range(len(parts), 0, -1):
            prefix = ".".join(parts[:i]).replace(".[", "[")
            if prefix in self.by_key:
                return self.by_key[prefix]
        return self.default

    def deepest(self, key: str) -> str:
        """The longest recorded key under `key` (so `--set no.such.key=1` is named in full)."""
        below = [k for k in self.by_key if k == key or k.startswith(key + ".")]
        return max(below, key=len) if below else key


class Fail:
    """What a rule gets to reject a value: `fail(key, value, problem)` raises the ConfigError."""

    def __init__(self, origins: Origins):
        self.origins = origins

    def __call__(self, key: str, value: Any, problem: str):
        raise ConfigError(key, value, self.origins(key), problem)

    @contextmanager
    def naming(self, **keys: str) -> Iterator[None]:
        """Run a library check (pipeline.arguments) with its arguments named by config keys: an
        ArgumentError inside becomes a ConfigError for the key of the argument it names, and the
        `backquoted` arguments in its text are replaced by their keys."""
        try:
            yield
        except ArgumentError as error:
            name, bracket, index = error.argument.partition("[")
            if name not in keys:
                raise
            key = keys[name] + bracket + index
            problem = re.sub(r"`(\w+)`", lambda m: keys.get(m[1], m[1]), error.problem)
            self(key, error.value, problem)


Rule = Callable[[Any, Fail], None]


# ----------------------------------------------------------------------------------------------
# Loading


def load(root: type[T], path: os.PathLike | str, overrides: Sequence[str] = (), rules: Sequence[Rule] = ()) -> T:
    """Load the YAML file at `path`, apply `key=value` overrides, build `root` and run `rules`."""
    path = Path(path)
    origin = str(path)
    if not path.is_file():
        raise ConfigError("--config", str(path), "command line", "no such config file")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError("<file>", str(path), origin, f"not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError("<root>", raw, origin, "a config file must be a mapping of sections")
    origins = Origins(origin)
    for key in _flatten_keys(raw):
        origins.by_key[key] = origin
    for override in overrides:
        key, value = parse_override(override)
        _set_dotted(raw, key, value)
        origins.by_key[key] = f"--set {override}"
    return build(root, raw, origins, rules)


def build(root: type[T], raw: dict, origins: Origins | None = None, rules: Sequence[Rule] = ()) -> T:
    """`root` from a plain tree of values, checked field by field and then by `rules`."""
    origins = origins or Origins("<dict>")
    tree = _build_dataclass(root, raw, "", origins)
    fail = Fail(origins)
    for rule in rules:
        rule(tree, fail)
    return tree


def parse_override(text: str) -> tuple[str, Any]:
    """`train.lr=2e-4` -> ("train.lr", 0.0002); the value is parsed as YAML (lists, null, bools)."""
    if "=" not in text:
        raise ConfigError(text, None, f"--set {text}", "an override must look like section.key=value")
    key, _, value_text = text.partition("=")
    key = key.strip()
    if not key or any(not part.isidentifier() for part in key.split(".")):
        raise ConfigError(key, value_text, f"--set {text}", "not a dotted key (section.key)")
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(key, value_text, f"--set {text}", f"value is not valid YAML: {exc}") from None
    return key, value


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(key, value, f"--set {key}", f"'{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def _flatten_keys(tree: dict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in tree.items():
        dotted = f"{prefix}{k}"
        keys.append(dotted)
        if isinstance(v, dict):
            keys.extend(_flatten_keys(v, dotted + "."))
    return keys


def _build_dataclass(cls, raw: Any, prefix: str, origins: Origins):
    name = prefix.rstrip(".") or "<root>"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(name, raw, origins(name), f"expected a mapping (section {cls.__name__})")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        renamed = getattr(cls, "RENAMED", {}).get(key)
        if key not in fields and renamed:  # a key the section no longer has: name its replacement
            dotted = f"{prefix}{key}"
            raise ConfigError(dotted, raw[key], origins(dotted), f"no longer a key: use {renamed}")
        if key not in fields:
            dotted = origins.deepest(f"{prefix}{key}")
            value = raw[key]
            for part in dotted.split(".")[len(prefix.split(".")):]:
                value = value.get(part) if isinstance(value, dict) else value
            known = ", ".join(sorted(fields))
            where = f" in section '{prefix.rstrip('.')}'" if prefix else ""
            raise ConfigError(dotted, value, origins(dotted),
                              f"unknown key '{key}'{where} (known: {known})")
    values = {}
    for fname, f in fields.items():
        dotted = f"{prefix}{fname}"
        if fname not in raw:
            continue
        value = _coerce(hints[fname], raw[fname], dotted, origins)
        _check_range(f, value, dotted, origins)
        values[fname] = value
    return cls(**values)


def _coerce(tp, value: Any, key: str, origins: Origins):
    """Check `value` against the annotation `tp`, converting only where lossless (int -> float)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, key + ".", origins)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if value is None:
            raise ConfigError(key, value, origins(key), "may not be null")
        return _coerce(inner[0], value, key, origins)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(key, value, origins(key), f"must be one of {choices}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, value, origins(key),
                              f"expected a mapping of {_type_name(args[0])} to {_type_name(args[1])}")
        return {_coerce(args[0], k, key, origins): _coerce(args[1], v, f"{key}.{k}", origins) for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(key, value, origins(key), f"expected a list of {_type_name(args[0])}")
        return [_coerce(args[0], item, f"{key}[{i}]", origins) for i, item in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, value, origins(key), "expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, value, origins(key), "expected an integer")
        return value
    if tp is float:
        if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads `2e-4` (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, value, origins(key), "expected a number")
        if not math.isfinite(value):
            raise ConfigError(key, value, origins(key), "must be finite")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, value, origins(key), "expected a string")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} for {key}")


_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _type_name(tp) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + "/".join(map(str, typing.get_args(tp)))
    if typing.get_origin(tp) is list:
        return f"lists of {_type_name(typing.get_args(tp)[0])}"
    if typing.get_origin(tp) in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


_BOUNDS = (("ge", lambda v, b: v >= b, "at least"), ("gt", lambda v, b: v > b, "greater than"),
           ("le", lambda v, b: v <= b, "at most"), ("lt", lambda v, b: v < b, "less than"))


def _check_range(f: dataclasses.Field, value: Any, key: str, origins: Origins) -> None:
    items = value if isinstance(value, list) else [value]
    for i, item in enumerate(items):
        if not isinstance(item, (int, float)) or isinstance(item, bool):
            continue
        where = f"{key}[{i}]" if isinstance(value, list) else key
        for bound, ok, text in _BOUNDS:
            limit = f.metadata.get(bound)
            if limit is not None and not ok(item, limit):
                raise ConfigError(where, item, origins(where), f"must be {text} {limit}")


# ----------------------------------------------------------------------------------------------
# Plain values


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1}} -> {"train.lr": 1}: dotted keys, as in `--set`."""
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            flat.update(flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def hash_value(value: Any) -> str:
    """sha256 of the canonical JSON of a plain value: stable across runs, key order and machines."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
