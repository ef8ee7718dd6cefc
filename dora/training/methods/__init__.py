"""The training methods, by name. A method is one module here with a class registered by `@register`; the loop,
the checkpoint, the bench, the study and the sweep take any of them (see docs/layout.md: adding a method)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dora.training.methods.base import Method

REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available as `--method NAME`."""
    REGISTRY[cls.name] = cls
    return cls


def method_class(name: str) -> type[Method]:
    """The method registered as `name`; ValueError naming the choices otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(REGISTRY)}")
    return REGISTRY[name]


def _import_all() -> None:
    """Import every module of this package: each registers its methods (a new method is a new file, nothing else).
    `dora` first, then the others by name (the order of the study's tables and legends)."""
    import importlib
    import pkgutil

    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base")
    for name in sorted(names, key=lambda n: n != "dora"):
        importlib.import_module(f"{__name__}.{name}")


_import_all()
