"""sandbox's @dataclass: the classes dataclasses.dataclass makes, without compiling a method per
class (sandbox/compiled_dataclass.py), through public APIs only."""
import copy
import dataclasses
import pickle
import subprocess
import sys

import pytest

from sandbox import compiled_dataclass as cdc


def make_classes(decorator):
    @decorator(frozen=True)
    class Point:
        """A frozen class with a default, a factory and a field left out of comparisons."""
        x: int
        y: int = 0
        tags: tuple = dataclasses.field(default_factory=tuple)
        note: str = dataclasses.field(default="", compare=False, repr=False)

    @decorator
    class Counter:
        """A mutable one, with a check after init."""
        n: int = 0
        seen: list = dataclasses.field(default_factory=list)

        def __post_init__(self):
            if self.n < 0:
                raise ValueError("negative")

    return Point, Counter


# At module level, under names of their own: pickle finds classes by module and qualified name.
OursPoint, OursCounter = make_classes(cdc.dataclass)
StdPoint, StdCounter = make_classes(dataclasses.dataclass)
for _name, _cls in (("OursPoint", OursPoint), ("OursCounter", OursCounter), ("StdPoint", StdPoint),
                    ("StdCounter", StdCounter)):
    _cls.__qualname__ = _name


def behaviour(Point, Counter):
    p = Point(1, tags=("a",), note="x")
    out = [repr(p).split("(", 1)[1], p == Point(1, 0, ("a",)), p == Point(1, 0, ("a",), "other note"), p != Point(2),
           hash(p) == hash(Point(1, 0, ("a",), "y")), dataclasses.astuple(p), dataclasses.asdict(p),
           repr(dataclasses.replace(p, y=5)).split("(", 1)[1], copy.copy(p) == p, pickle.loads(pickle.dumps(p)) == p,
           [f.name for f in dataclasses.fields(Point)], dataclasses.is_dataclass(Point)]
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        del p.y
    c = Counter()
    c.n += 1
    c.seen.append(1)
    out += [repr(c).split("(", 1)[1], c == Counter(1, [1]), Counter().seen is not Counter().seen, Counter.__hash__ is None]
    for bad in (lambda: Point(), lambda: Point(1, 2, (), "n", "extra"), lambda: Point(1, x=1),
                lambda: Point(1, z=3), lambda: Counter(-1)):
        with pytest.raises((TypeError, ValueError)) as caught:
            bad()
        out.append(type(caught.value).__name__)
    return [str(item) for item in out]


def test_classes_behave_as_the_standard_decorator_makes_them():
    assert behaviour(OursPoint, OursCounter) == behaviour(StdPoint, StdCounter)


def test_making_a_class_compiles_nothing():
    """The point of it: no method source is compiled (sys.audit's "compile" event is public)."""
    code = ("import sys, dataclasses\n"
            "from sandbox import compiled_dataclass as c\n"
            "events = []\n"
            "sys.addaudithook(lambda event, args: events.append(event) if event in ('compile', 'exec') else None)\n"
            "@c.dataclass(frozen=True)\n"
            "class A:\n"
            "    '''x'''\n"
            "    x: int = 0\n"
            "    y: tuple = dataclasses.field(default_factory=tuple)\n"
            "A(1) == A(1), hash(A()), repr(A())\n"
            "print(len(events))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "0"


def test_the_run_path_classes_are_made_without_compiling():
    """End to end: importing the CLI and the launcher makes dozens of classes, and compiles no
    method source for any of them."""
    code = ("import sys, traceback\n"
            "events = []\n"
            "def hook(event, args):\n"
            "    if event == 'compile' and any('dataclasses.py' in f.filename for f in traceback.extract_stack()):\n"
            "        events.append(args[1])\n"
            "sys.addaudithook(hook)\n"
            "import sandbox.cli, sandbox.api, sandbox.launcher, sandbox.child, sandbox.profile.model\n"
            "print(len(events))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "0"
