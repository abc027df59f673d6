"""``@dataclass`` without compiling a method per class at every start.

dataclasses.dataclass writes each generated method (``__init__``, ``__repr__``, ``__eq__``,
``__hash__``, and for frozen classes ``__setattr__``/``__delattr__``) as source text and compiles it
with ``exec``: ~0.4 ms a class, ~25 ms of the CLI's start for our ~50 classes. Here dataclasses
still does what it is for (it collects the fields, their defaults and metadata, so that
``dataclasses.fields``, ``replace``, ``asdict`` and ``is_dataclass`` work as always), but with
``init``, ``repr`` and ``eq`` turned off, and the methods are shared functions that read the
class's field list: nothing is compiled. Public API only. The price is a few microseconds per
instance, which a launch creates a few hundred of.
"""
from __future__ import annotations

import dataclasses

_MISSING = dataclasses.MISSING
_FrozenInstanceError = dataclasses.FrozenInstanceError
_setattr = object.__setattr__


def dataclass(cls=None, /, *, frozen: bool = False):
    """``dataclasses.dataclass(cls, frozen=...)`` with the methods described above."""
    def wrap(cls):
        cls = dataclasses.dataclass(cls, init=False, repr=False, eq=False)
        fields = dataclasses.fields(cls)
        names = tuple(f.name for f in fields)
        shown = tuple(f.name for f in fields if f.repr)
        compared = tuple(f.name for f in fields if f.compare)
        hashed = tuple(f.name for f in fields if (f.compare if f.hash is None else f.hash))
        # (name, kind, default): kind 0 required, 1 a value, 2 a factory
        spec = tuple((f.name, 2, f.default_factory) if f.default_factory is not _MISSING else
                     (f.name, 1, f.default) if f.default is not _MISSING else (f.name, 0, None) for f in fields)
        post_init = getattr(cls, "__post_init__", None)
        qualname = cls.__qualname__

        def __init__(self, *args, **kwargs):
            if len(args) > len(spec):
                raise TypeError(f"{qualname}.__init__() takes {len(spec) + 1} positional arguments but "
                                f"{len(args) + 1} were given")
            for index, (name, kind, default) in enumerate(spec):
                if index < len(args):
                    value = args[index]
                    if name in kwargs:
                        raise TypeError(f"{qualname}.__init__() got multiple values for argument {name!r}")
                elif name in kwargs:
                    value = kwargs[name]
                elif kind == 1:
                    value = default
                elif kind == 2:
                    value = default()
                else:
                    raise TypeError(f"{qualname}.__init__() missing 1 required argument: {name!r}")
                _setattr(self, name, value)
            if len(kwargs) > len(spec) - len(args) or any(key not in names for key in kwargs):
                unknown = next(key for key in kwargs if key not in names)
                raise TypeError(f"{qualname}.__init__() got an unexpected keyword argument {unknown!r}")
            if post_init is not None:
                post_init(self)

        def __repr__(self):
            return f"{type(self).__qualname__}(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in shown) + ")"

        def __eq__(self, other):
            if other.__class__ is not self.__class__:
                return NotImplemented
            return tuple(getattr(self, n) for n in compared) == tuple(getattr(other, n) for n in compared)

        __init__.__qualname__ = f"{qualname}.__init__"
        cls.__init__, cls.__repr__, cls.__eq__ = __init__, __repr__, __eq__
        if frozen:
            def __setattr__(self, name, value):
                raise _FrozenInstanceError(f"cannot assign to field {name!r}")

            def __delattr__(self, name):
                raise _FrozenInstanceError(f"cannot delete field {name!r}")

            def __hash__(self):
                return hash(tuple(getattr(self, n) for n in hashed))
            cls.__setattr__, cls.__delattr__, cls.__hash__ = __setattr__, __delattr__, __hash__
        else:
            cls.__hash__ = None  # mutable and comparable: unhashable, as dataclasses makes it
        return cls
    return wrap if cls is None else wrap(cls)
