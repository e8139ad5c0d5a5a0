"""A name → class table filled by a class decorator: the sources (`source.type`) and the outputs
(`outputs.<name>`) each have one.

    SOURCE_TYPES = Registry("source.type")

    @SOURCE_TYPES.register("synthetic")
    class SyntheticSource(FrameSource): ...

    SOURCE_TYPES.get("synthetic")  # the class; FaceedgeError naming the key and the choices otherwise
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from device.errors import FaceedgeError

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """Classes by name. `register(name)` also sets the class's `type` attribute to `name`."""

    def __init__(self, key: str) -> None:
        self.key = key  # how the config spells the choice, for error messages
        self._classes: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(cls: T) -> T:
            if self._classes.get(name, cls) is not cls:
                raise ValueError(
                    f"{self.key} {name!r}: registered twice ({self._classes[name].__name__}, {cls.__name__})"
                )
            cls.type = name
            self._classes[name] = cls
            return cls

        return decorate

    def get(self, name: str) -> T:
        try:
            return self._classes[name]
        except KeyError:
            raise FaceedgeError(f"{self.key} {name!r}: unknown; choose one of {sorted(self._classes)}") from None

    def __getitem__(self, name: str) -> T:
        return self._classes[name]

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)
