"""Typed validation shared by every stage: the strict base model and one-line error messages.

Every config and manifest model derives from `Strict`, a `msgspec.Struct` whose unknown keys are
errors that name the key. msgspec rather than pydantic because the daemon runs on 512 MB boards:
importing the library and validating one strict model took +1.9 MB and 12-14 ms with msgspec,
+13 MB and 115-136 ms with pydantic (docs/bench.md).

A model declares its fields with type annotations; constraints and help text go in
``Annotated[int, Meta(ge=1, description=...)]``; rules that involve more than one field go in a
`check` method that raises ValueError. Validation happens both in `model_validate` (from YAML/JSON
data) and on direct construction (``CropConfig(mode="face")``), and its failure is one
`ValidationError` naming the dotted key (``source.fps``), what was wrong and the value given.

`Strict` keeps the method names the project used with pydantic (`model_validate`, `model_dump`,
`model_dump_json`, `model_copy`), so callers read the same.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any, TypeVar

import msgspec

__all__ = ["Lenient", "Meta", "Strict", "ValidationError", "field", "first_error", "invalid"]

Meta = msgspec.Meta
field = msgspec.field

T = TypeVar("T", bound="_Model")

_MISSING = object()
_state = threading.local()  # depth > 0 while msgspec builds instances: skip the round-trip check


class ValidationError(ValueError):
    """One problem of a config/manifest: `loc` the key path, `kind` unknown | missing | value."""

    def __init__(
        self, loc: tuple[str | int, ...], kind: str, msg: str, value: Any = _MISSING, quoted: bool = False
    ) -> None:
        self.loc, self.kind, self.msg, self.value = loc, kind, msg, value
        self.quoted = quoted  # the message already shows the value
        super().__init__(f"{self.key}: {self.detail}")

    @property
    def key(self) -> str:
        return ".".join(str(x) for x in self.loc)

    @property
    def has_value(self) -> bool:
        return self.value is not _MISSING and self.kind == "value"

    @property
    def detail(self) -> str:
        """The message, with the offending value quoted when it is a scalar."""
        if self.has_value and not self.quoted and isinstance(self.value, (str, int, float, bool)):
            return f"{self.msg} (got {self.value!r})"
        return self.msg


_FIELD = "\x1f"  # separates the field name from the message in `invalid`'s ValueError


def invalid(name: str, msg: str) -> None:
    """In a `check` method: reject the value of field `name` (the error then names that key)."""
    raise ValueError(f"{name}{_FIELD}{msg}")


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def _translate(e: msgspec.ValidationError, data: Any) -> ValidationError:
    m = _AT.match(str(e))
    msg, path = m.group("msg"), m.group("path") or ""
    loc: list[str | int] = [name if name else int(i) for name, i in _PART.findall(path)]
    if u := re.fullmatch(r"Object contains unknown field `(.+)`", msg):
        return ValidationError((*loc, u.group(1)), "unknown", "Extra inputs are not permitted")
    if u := re.fullmatch(r"Object missing required field `(.+)`", msg):
        return ValidationError((*loc, u.group(1)), "missing", "Field required")
    quoted = _FIELD in msg  # a `check` message shows the value itself
    if quoted:
        name, msg = msg.split(_FIELD, 1)
        loc.append(name)
    if msg.startswith(("Invalid enum value", "Invalid value")):
        msg = "not one of the allowed values"
    value: Any = data
    for part in loc:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            value = _MISSING
            break
    msg = re.sub(r"`([^`]*)`", r"\1", msg)  # "Expected `int` >= 1" -> "Expected int >= 1"
    return ValidationError(tuple(loc), "value", msg, value, quoted=quoted)


def _dec_hook(type_: type, obj: Any) -> Any:
    if type_ is Path and isinstance(obj, str):
        return Path(obj)
    raise NotImplementedError(f"cannot read {type(obj).__name__} as {getattr(type_, '__name__', type_)}")


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    raise NotImplementedError(f"cannot write {type(obj).__name__}")


class _Model(msgspec.Struct, kw_only=True):
    def __post_init__(self) -> None:
        if getattr(_state, "depth", 0):
            self.check()  # built by msgspec from data: types and bounds are already checked
            return
        # Built directly (CropConfig(mode="face")): msgspec checks no types or bounds there, so
        # validate this instance's content the way model_validate would, and keep what that made
        # (nested sections given as dicts become models, strings paths).
        checked = type(self).model_validate(msgspec.to_builtins(self, enc_hook=_enc_hook))
        for name in self.__struct_fields__:
            setattr(self, name, getattr(checked, name))

    def check(self) -> None:
        """Rules across fields; raise ValueError naming them. Runs after the fields are valid."""

    @classmethod
    def model_validate(cls: type[T], data: Any) -> T:
        """Data (YAML/JSON builtins) → an instance; ValidationError names the first problem."""
        _state.depth = getattr(_state, "depth", 0) + 1
        try:
            return msgspec.convert(data, cls, strict=False, dec_hook=_dec_hook)
        except msgspec.ValidationError as e:
            raise _translate(e, data) from None
        finally:
            _state.depth -= 1

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return cls.__struct_fields__

    def model_dump(self) -> dict[str, Any]:
        """JSON-ready builtins (paths as strings, tuples as lists), nested sections included."""
        return msgspec.to_builtins(self, enc_hook=_enc_hook)

    def model_dump_json(self, indent: int = 0) -> str:
        text = msgspec.json.encode(self, enc_hook=_enc_hook)
        return msgspec.json.format(text, indent=indent).decode() if indent else text.decode()

    def model_copy(self: T, update: dict[str, Any] | None = None) -> T:
        """A copy with some fields replaced (not re-validated, like pydantic's model_copy)."""
        _state.depth = getattr(_state, "depth", 0) + 1
        try:
            return msgspec.structs.replace(self, **(update or {}))
        finally:
            _state.depth -= 1


class Strict(_Model, forbid_unknown_fields=True, kw_only=True):
    """Base for every typed config/manifest: unknown keys are errors that name the key."""


class Lenient(_Model, kw_only=True):
    """Base for reading part of a file another stage owns: keys it does not declare are ignored."""


def first_error(e: ValidationError, root: str = "(root)") -> tuple[str, str]:
    """(dotted key, message) of a validation error, for one-line FaceedgeErrors."""
    return e.key or root, e.detail
