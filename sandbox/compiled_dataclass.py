"""``@dataclass`` whose generated methods are compiled once, not at every start.

Python 3.11 builds each method of a dataclass (``__init__``, ``__repr__``, ``__eq__``, ``__hash__``
and, for frozen classes, ``__setattr__`` and ``__delattr__``) by writing its source and compiling it
with ``exec``: ~0.4 ms a class, ~14 ms of the CLI's start for our classes. That source depends only
on the class definition, so this keeps the compiled code objects in the user's cache
(``usercache``), keyed by the source itself, and hands them to ``exec`` on later starts. The
classes are still made by ``dataclasses.dataclass`` and come out the same; only the compiling is
skipped. A missing, foreign or unreadable cache just means compiling, as without it.
"""
from __future__ import annotations

import dataclasses
import marshal
import sys
import threading
import types

from . import usercache

_KIND = "python"
_NAME = f"dataclass-methods.{sys.implementation.cache_tag}.marshal"
# Code objects are only valid for the interpreter that made them.
_HEADER = f"sandbox dataclass methods 1 {sys.version}\n".encode()
_MAX_ENTRIES = 2000  # more means stale entries from many old versions: start afresh

_lock = threading.Lock()
_codes: dict[str, types.CodeType] | None = None
_used: set[str] = set()
_changed = False
_save_at_exit = False


def dataclass(cls=None, /, **options):
    """``dataclasses.dataclass``, with its methods' code taken from the cache when there."""
    def wrap(cls):
        with _lock:
            _load()
            dataclasses.exec = _exec  # the name dataclasses looks up to compile each method
            try:
                return dataclasses.dataclass(**options)(cls)
            finally:
                del dataclasses.exec
    return wrap if cls is None else wrap(cls)


def _exec(source, globals=None, locals=None):
    if isinstance(source, str):
        code = _codes.get(source)
        if type(code) is not types.CodeType:
            code = compile(source, "<string>", "exec", dont_inherit=True)
            _remember(source, code)
        _used.add(source)
        source = code
    exec(source, globals, locals)


def _load() -> None:
    global _codes
    if _codes is not None:
        return
    _codes = {}
    blob = usercache.read(usercache.directory(_KIND), _NAME)
    if blob is None or not blob.startswith(_HEADER):
        return
    try:
        codes = marshal.loads(memoryview(blob)[len(_HEADER):])
    except (ValueError, EOFError, TypeError):
        return
    if isinstance(codes, dict):
        _codes = codes


def _remember(source: str, code: types.CodeType) -> None:
    global _changed, _save_at_exit
    _codes[source] = code
    _changed = True
    if not _save_at_exit:
        _save_at_exit = True
        import atexit  # written once, at exit, after every class of this run is made
        atexit.register(_save)


def _save() -> None:
    with _lock:
        if not _changed:
            return
        codes = _codes
        if len(codes) > _MAX_ENTRIES:
            codes = {source: codes[source] for source in _used}
        usercache.write(usercache.directory(_KIND), _NAME, _HEADER + marshal.dumps(codes))
