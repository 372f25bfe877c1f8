"""One reader for settings: nested mappings (YAML files, ``section.key=value`` overrides, ROS
parameter values) -> nested dataclasses, checked against each field's type hint and limits.

Model configs, training recipes, dataset configs and node parameters are dataclasses; this is
the only code that turns a mapping into one of them. A value of the wrong type, shape or range
raises ConfigError naming the source, the dotted key and the expected form, e.g.

    training/recipes/mfnet.yaml: data.crop: values must be >= 16 and multiples of 16, got [0, 0]

Limits live beside the field: ``crop: tuple[int, int] = setting((480, 640), ge=16, multiple_of=16)``.
A field added to a config needs no parser change; its type hint is its check.

Why ours and not a library: dacite and OmegaConf structured configs were considered. Neither
checks ranges or multiples, so a second pass over the same fields would remain; dacite's
errors name neither the file nor the expected shape, and int -> float, list -> tuple and
ROS's array.array -> list each need a hook; OmegaConf hands back its own containers and turns
tuples into lists. Either would also be one more dependency for the ROS package to declare.
What is left is small: one recursive walk over the type hints (this module).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import stat
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from taseg_ros.errors import MissingInputError, TasegError

# Bounds for text a file hands us (configs, recipes, class lists, checkpoint and export metadata):
# generous for anything taseg writes or a person types, small enough that a hostile file cannot
# exhaust the stack (deep nesting) or memory (size, YAML alias expansion).
MAX_TEXT_BYTES = 16 * 1024 * 1024
MAX_NESTING = 64

_NO_VALUE = object()


class ConfigError(TasegError, ValueError):
    """A setting of the wrong type, shape or range. ``style="parameter"`` words it the way the
    node reports ROS parameters (``parameter 'slop' = 'fast': expected a value like 0.02``)."""

    def __init__(self, key: str, why: str, value: Any = _NO_VALUE, where: str = "", style: str = "file") -> None:
        self.key, self.why, self.value, self.where, self.style = key, why, value, where, style
        super().__init__(self._text())

    def __reduce__(self):  # pickles with its parts, not the message (multiprocessing workers)
        return (ConfigError, (self.key, self.why, self.value, self.where, self.style))

    def _text(self) -> str:
        if self.style == "parameter" and self.key and self.value is not _NO_VALUE:
            return f"parameter '{self.key}' = {self.value!r}: {self.why}"
        text = self.why if self.value is _NO_VALUE else f"{self.why}, got {self.value!r}"
        text = f"{self.key}: {text}" if self.key else text
        return f"{self.where}: {text}" if self.where else text

    def located(self, where: str, prefix: str) -> "ConfigError":
        """The same problem, seen from an enclosing config read from `where`."""
        key = ".".join(k for k in (prefix, self.key) if k)
        return ConfigError(key, self.why, self.value, self.where or where, self.style)


@dataclass(frozen=True)
class Limits:
    """What a field's value must satisfy beyond its type; for a list, each of its values."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    multiple_of: int | None = None
    choices: tuple | None = None
    form: str | None = None  # the expected form in words, e.g. "[height, width]"
    unit: str = ""

    def problem(self, value: Any) -> str | None:
        """Why `value` breaks the limits, or None."""
        many = isinstance(value, (tuple, list))
        for v in value if many else (value,):
            if self.choices is not None and v not in self.choices:
                return f"expected one of {', '.join(str(c) for c in self.choices)}"
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not self._within(v):
                return ("values must be " if many else "must be ") + self.range_text(many)
        return None

    def _within(self, v: float) -> bool:
        if math.isnan(v):
            return not (self.ge is not None or self.gt is not None or self.le is not None or self.lt is not None)
        return (
            (self.ge is None or v >= self.ge)
            and (self.gt is None or v > self.gt)
            and (self.le is None or v <= self.le)
            and (self.lt is None or v < self.lt)
            and (self.multiple_of is None or v % self.multiple_of == 0)
        )

    def range_text(self, many: bool) -> str:
        parts = []
        if self.ge is not None and self.le is not None:
            parts.append(f"in [{_number(self.ge)}, {_number(self.le)}]")
        else:
            parts += [f"{op} {_number(x)}" for op, x in ((">=", self.ge), ("<=", self.le)) if x is not None]
        parts += [f"{op} {_number(x)}" for op, x in ((">", self.gt), ("<", self.lt)) if x is not None]
        if self.multiple_of is not None:
            parts.append(f"multiples of {self.multiple_of}" if many else f"a multiple of {self.multiple_of}")
        return " and ".join(parts) + (f" {self.unit}" if self.unit else "")


class _BoundedYamlLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses aliases, nesting deeper than MAX_NESTING and duplicate keys, and
    reads ``1e-4`` as a number. PyYAML shares an aliased node, so "billion laughs" parses fast and
    explodes in whatever walks it next (our config reader, json.dumps); no taseg file needs aliases,
    so they are refused outright. PyYAML's composer recurses once per level: the depth bound keeps it
    off Python's stack limit. A key given twice keeps only its last value in PyYAML; a gate or a
    parameter silently dropped is worse than a refusal."""

    _depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not accepted in taseg files", mark)
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_NESTING} levels",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


# YAML 1.2 reads 1e-4 and 1E5 as numbers; PyYAML (YAML 1.1) needs a dot and a signed exponent and
# otherwise hands back the text "1e-4": every float setting would need to accept numbers as text.
_bounded_resolvers = {k: list(v) for k, v in _BoundedYamlLoader.yaml_implicit_resolvers.items()}
_BoundedYamlLoader.yaml_implicit_resolvers = _bounded_resolvers
_BoundedYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _check_size(text: str | bytes, where: str) -> None:
    if len(text) > MAX_TEXT_BYTES:
        raise ConfigError("", f"{len(text)} bytes of text, over the limit of {MAX_TEXT_BYTES}", where=where)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def parse_yaml(text: str, where: str = "") -> Any:
    """The one YAML reader of the package (yaml.SafeLoader, bounded: size, nesting, no aliases, no
    duplicate keys); a bad text raises ConfigError naming `where`, in one line."""
    _check_size(text, where)
    loader = None
    try:
        loader = _BoundedYamlLoader(text)  # checks the characters already (a control character: ReaderError)
        loader.name = where or loader.name  # parser messages say "in <file>, line 3"
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError("", f"not valid YAML: {_one_line(exc)}", where=where) from None
    finally:
        if loader is not None:
            loader.dispose()


def read_bytes(path: str | Path, limit: int | None = MAX_TEXT_BYTES) -> bytes:
    """The bytes of a file a user names: a regular file (a FIFO would block, /dev/zero never end),
    at most `limit` bytes (None: any size, for model files); MissingInputError or ConfigError naming
    it, in one line."""
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO without a writer returns at once instead of waiting for one.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise MissingInputError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError("", f"cannot be read ({exc.strerror or exc})", where=str(path)) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
        raise ConfigError("", f"{kind}, not a regular file", where=str(path))
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read() if limit is None else f.read(limit + 1)
        except OSError as exc:
            raise ConfigError("", f"cannot be read ({exc.strerror or exc})", where=str(path)) from None
    if limit is not None and len(data) > limit:
        raise ConfigError("", f"over the limit of {limit} bytes for this file", where=str(path))
    return data


def read_text(path: str | Path, limit: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of a file a user names (see read_bytes: regular file, bounded, one-line errors)."""
    data = read_bytes(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"not UTF-8 text (byte {exc.start})", where=str(path)) from None


def read_yaml(path: str | Path) -> Any:
    """parse_yaml of a file (read_text: a regular file, its size bounded before it is read)."""
    return parse_yaml(read_text(path), str(path))


def read_json(path: str | Path) -> Any:
    """parse_json of a file (read_text: a regular file, its size bounded before it is read)."""
    return parse_json(read_text(path), str(path))


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def parse_json(text: str | bytes, where: str = "") -> Any:
    """The one reader of JSON found in files (checkpoint and export metadata, run folders, reports):
    bounded in size and nesting, no duplicate keys; a bad text raises ConfigError naming `where`."""
    _check_size(text, where)
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except RecursionError:  # the C decoder recurses per level
        raise ConfigError("", f"JSON nested deeper than {MAX_NESTING} levels", where=where) from None
    except ValueError as exc:
        raise ConfigError("", f"not valid JSON ({_one_line(exc)})", where=where) from None
    if _nesting(data) > MAX_NESTING:
        raise ConfigError("", f"JSON nested deeper than {MAX_NESTING} levels", where=where)
    return data


def _nesting(data: Any) -> int:
    """Depth of nested lists/dicts, without recursion (the point is not to overflow the stack)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (list, dict)):
            deepest = max(deepest, depth)
            if depth <= MAX_NESTING:
                stack.extend((v, depth + 1) for v in (node.values() if isinstance(node, dict) else node))
    return deepest


def _number(x: float) -> str:
    """A limit in words: integers in full (a seed limit of 4294967295, not 4.29497e+09)."""
    return str(x) if isinstance(x, int) else f"{x:g}"


def setting(default: Any = MISSING, *, default_factory: Any = MISSING, **limits: Any) -> Any:
    """A dataclass field with Limits (ge, gt, le, lt, multiple_of, choices, form, unit)."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"limits": Limits(**limits)})


def limits_of(field: dataclasses.Field) -> Limits | None:
    return field.metadata.get("limits")


def check_fields(obj: Any, style: str = "file") -> None:
    """Raise ConfigError for the first field of dataclass `obj` outside its Limits (for
    __post_init__ and for objects built directly rather than through from_mapping)."""
    for f in dataclasses.fields(obj):
        limits = limits_of(f)
        value = getattr(obj, f.name)
        why = limits.problem(value) if limits else None
        if why:
            raise ConfigError(f.name, why, value, style=style)


def from_mapping(cls: type, data: Any, where: str = "", *, base: Any = None, style: str = "file",
                 strict: bool = False) -> Any:
    """A `cls` from the mapping `data` (nested mappings -> nested dataclasses). Keys missing from
    `data` keep their value in `base` (an instance of `cls`), or the field default without one.
    `where` (a file name) starts every error message. `strict`: a number must be a number (not the
    text of one), for files only programs write or where a quoted number is a mistake (gates)."""
    return _Reader(where, style, strict).build(cls, data, "", base)


def check_type(value: Any, hint: Any, key: str, where: str = "") -> Any:
    """`value` as the type hint `hint` (strictly: numbers must be numbers, True is no number), or
    ConfigError naming `where` and `key` with the expected form: for values read from a file that
    no dataclass describes whole (a report's figures)."""
    reader = _Reader(where, "file", strict=True)
    converted = reader._typed(hint, value, key, None)
    if converted is _NO_VALUE:
        raise reader.error(key, f"expected {describe(hint)}", value)
    if not _finite(converted):
        raise reader.error(key, "must be a finite number", value)
    return converted


def merge(obj: Any, changes: Mapping, where: str = "") -> Any:
    """A copy of dataclass `obj` with `changes` (nested mappings merge into nested configs)."""
    return from_mapping(type(obj), changes, where, base=obj)


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None


class _Reader:
    """One walk over a mapping; remembers the source and message style for its errors."""

    def __init__(self, where: str, style: str, strict: bool = False) -> None:
        self.where, self.style, self.strict = where, style, strict

    def error(self, key: str, why: str, value: Any = _NO_VALUE) -> ConfigError:
        return ConfigError(key, why, value, self.where, self.style)

    def build(self, cls: type, data: Any, prefix: str, base: Any) -> Any:
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        if not isinstance(data, Mapping):
            raise self.error(prefix, f"expected a mapping with keys {', '.join(fields)}", data)
        unknown = [k for k in data if k not in fields]
        if unknown:
            raise self.error(prefix, f"unknown key '{unknown[0]}' (known: {', '.join(sorted(fields))})")
        if base is None:
            missing = [n for n, f in fields.items() if n not in data and f.default is MISSING and f.default_factory is MISSING]
            if missing:
                raise self.error(prefix, f"missing key '{missing[0]}'")
        values = {}
        for name, value in data.items():
            f = fields[name]
            key = f"{prefix}.{name}" if prefix else name
            current = getattr(base, name) if base is not None else _default(f)
            values[name] = self.convert(_hints(cls)[name], value, key, current, f)
        try:
            return dataclasses.replace(base, **values) if base is not None else cls(**values)
        except ConfigError as exc:
            raise exc.located(self.where, prefix) from None
        except (TypeError, ValueError) as exc:  # a __post_init__ check of the class itself
            message, name = str(exc), prefix.rpartition(".")[2]
            if self.where and message.startswith(self.where):
                raise ConfigError("", message, style=self.style) from None
            if name and message.startswith(f"{name}:"):  # the class named itself
                prefix = prefix.rpartition(".")[0]
            raise self.error(prefix, message) from None

    def convert(self, hint: Any, value: Any, key: str, current: Any, f: dataclasses.Field) -> Any:
        limits = limits_of(f)
        converted = self._typed(hint, value, key, current)
        if converted is _NO_VALUE:
            if self.style == "parameter":
                why = f"expected a value like {_default(f)!r}"
            else:
                form = describe(hint)
                why = f"expected {limits.form} ({form})" if limits and limits.form else f"expected {form}"
            raise self.error(key, why, value)
        if not _finite(converted):  # NaN/inf (JSON and YAML read them) would make every output garbage
            raise self.error(key, "must be a finite number", value)
        why = limits.problem(converted) if limits else None
        if why:
            raise self.error(key, why, value)
        return converted

    def _typed(self, hint: Any, value: Any, key: str, current: Any) -> Any:
        """`value` as a `hint`, or _NO_VALUE when it is not one (nested errors raise)."""
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if hint is Any:
            return value
        if origin in (Union, types.UnionType):
            if value is None:
                return None if type(None) in args else _NO_VALUE
            options = [a for a in args if a is not type(None)]
            if len(options) == 1:
                return self._typed(options[0], value, key, current)
            return next((v for v in (self._typed(a, value, key, current) for a in options) if v is not _NO_VALUE), _NO_VALUE)
        if origin is Literal:
            return value if value in args else _NO_VALUE
        if dataclasses.is_dataclass(hint):
            if isinstance(value, hint):
                return value
            return self.build(hint, value, key, current if isinstance(current, hint) else None)
        if origin in (tuple, list) or hint in (tuple, list):
            return self._sequence(hint, value, key)
        if origin is dict or hint is dict:
            return self._mapping(hint, value, key)
        return _scalar(hint, value, self.strict)

    def _mapping(self, hint: Any, value: Any, key: str) -> Any:
        """A dict, each key and value checked against dict[K, V] (a value that is a dataclass is built,
        its errors naming ``key.<its key>``)."""
        if not isinstance(value, Mapping):
            return _NO_VALUE
        key_hint, value_hint = typing.get_args(hint) or (Any, Any)
        out = {}
        for k, v in value.items():
            if self._typed(key_hint, k, key, None) is _NO_VALUE:
                raise self.error(key, f"keys must be {describe(key_hint)}", k)
            item_key = f"{key}.{k}" if key else str(k)
            converted = self._typed(value_hint, v, item_key, None)
            if converted is _NO_VALUE:
                raise self.error(item_key, f"expected {describe(value_hint)}", v)
            out[k] = converted
        return out

    def _sequence(self, hint: Any, value: Any, key: str) -> Any:
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
            return _NO_VALUE
        items, args = list(value), typing.get_args(hint)
        container = typing.get_origin(hint) or hint
        if container is tuple and args and args[-1] is not Ellipsis:
            if len(items) != len(args):
                return _NO_VALUE
            item_hints = list(args)
        else:
            item_hints = [args[0] if args else Any] * len(items)
        out = [self._typed(h, v, key, None) for h, v in zip(item_hints, items)]
        return _NO_VALUE if any(v is _NO_VALUE for v in out) else container(out)


def _finite(value: Any) -> bool:
    """False for a float, or a list/tuple holding one, that is NaN or infinite."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (tuple, list)):
        return all(_finite(v) for v in value)
    return True


def _scalar(hint: Any, value: Any, strict: bool = False) -> Any:
    if hint is bool:
        return value if isinstance(value, bool) else _NO_VALUE
    if isinstance(value, bool):
        return _NO_VALUE  # True is an int to Python, never a number to a user
    if hint is int:
        return value if isinstance(value, int) else _NO_VALUE
    if hint is float:
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str) and not strict:  # a number quoted in a recipe, or a key=value override
            try:
                return float(value)
            except ValueError:
                return _NO_VALUE
        return _NO_VALUE
    if isinstance(hint, type):
        return value if isinstance(value, hint) else _NO_VALUE
    return value


_PLURALS = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}
_SINGULARS = {int: "a number (an integer)", float: "a number", str: "a string", bool: "true or false"}


def describe(hint: Any) -> str:
    """The expected form of a type hint in words ("a list of 2 integers")."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        words = [describe(a) for a in args if a is not type(None)]
        return " or ".join(words) + (" or null" if type(None) in args else "")
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (tuple, list) or hint in (tuple, list):
        if origin is tuple and args and args[-1] is not Ellipsis:
            kinds = {a for a in args}
            item = _PLURALS.get(args[0], "values") if len(kinds) == 1 else "values"
            return f"a list of {len(args)} {item}"
        return f"a list of {_PLURALS.get(args[0], 'values') if args else 'values'}"
    if dataclasses.is_dataclass(hint) or origin is dict or hint is dict:
        return "a mapping"
    return _SINGULARS.get(hint, getattr(hint, "__name__", str(hint)))
