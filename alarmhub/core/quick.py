"""A faster `__init__` for the frozen, slotted dataclasses built per message and per alarm.

A frozen dataclass's generated `__init__` sets each field through
`object.__setattr__(self, name, value)`: a global lookup, a bound call and a name
lookup on the class per field, because the class's own `__setattr__` refuses.
Setting each slot through its descriptor's `__set__`, bound once when the class is
defined, does the same in half the time (Alarm: 5.5 -> 2.6 us; TimelineEntry 1.1 ->
0.7 us, on the machine of docs/performance.md's fourteenth part). A storm builds
several such objects per new alarm (issue 18).

`quick_init` keeps everything a caller can see: the same parameters in the same
order with the same defaults (a fresh value per instance from a `default_factory`),
keyword-only fields, `__post_init__` called last, and TypeError for a missing or
unknown argument. tests/core/test_quick.py holds each decorated class to the
dataclass's own `__init__`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class _Factory:
    """The default shown for a field with a `default_factory` (dataclasses' own marker
    is private): the factory is called when the argument is left out."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()


def quick_init(cls: type[T]) -> type[T]:
    """Give a frozen, slotted dataclass the faster `__init__`; the class's own is kept
    as `__dataclass_init__` (for the tests that hold the two to each other)."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"quick_init: {cls.__name__} is not a frozen, slotted dataclass")
    setattr(cls, "__dataclass_init__", cls.__init__)  # noqa: B010 - a dunder mypy cannot see
    setattr(cls, "__init__", _generated_init(cls))  # noqa: B010 - replaced on purpose
    return cls


def _generated_init(cls: type[Any]) -> Callable[..., None]:
    namespace: dict[str, Any] = {"_FACTORY": _FACTORY}
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    for f in dataclasses.fields(cls):
        if not f.init or isinstance(f.type, dataclasses.InitVar):
            raise TypeError(f"quick_init: {cls.__name__}.{f.name} is not a plain init field")
        name = f.name
        if f.default is not dataclasses.MISSING:
            namespace[f"_default_{name}"] = f.default
            param = f"{name}=_default_{name}"
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"_factory_{name}"] = f.default_factory
            param = f"{name}=_FACTORY"
            body.append(f"    if {name} is _FACTORY:\n        {name} = _factory_{name}()")
        else:
            param = name
        (keyword if f.kw_only else positional).append(param)
        namespace[f"_set_{name}"] = cls.__dict__[name].__set__
        body.append(f"    _set_{name}(self, {name})")
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    params = ["self", *positional, *(["*", *keyword] if keyword else [])]
    source = f"def __init__({', '.join(params)}):\n" + "\n".join(body or ["    pass"]) + "\n"
    exec(source, namespace)  # noqa: S102 - our own text, built from the class's fields
    init: Callable[..., None] = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init
