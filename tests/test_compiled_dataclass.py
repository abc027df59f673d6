"""compiled_dataclass: the same classes as @dataclass, with method code reused from the user's cache."""
import dataclasses
import os
import subprocess
import sys

import pytest

from sandbox import compiled_dataclass as cdc

CACHE_FILE = ("sandbox", "python", cdc._NAME)


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """A cache in tmp_path, and the module as a new process would start it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(cdc, "_codes", None)
    monkeypatch.setattr(cdc, "_used", set())
    monkeypatch.setattr(cdc, "_changed", False)
    return tmp_path.joinpath(*CACHE_FILE)


def make_classes(decorator):
    @decorator(frozen=True)
    class Point:
        """A frozen class with a default and a factory."""
        x: int
        y: int = 0
        tags: tuple = dataclasses.field(default_factory=tuple)

    @decorator
    class Counter:
        """A mutable one."""
        n: int = 0
    return Point, Counter


def behaviour(Point, Counter):
    p = Point(1, tags=("a",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 2
    c = Counter()
    c.n += 1
    return (repr(p), p == Point(1, 0, ("a",)), p != Point(2), hash(p) == hash(Point(1, 0, ("a",))),
            dataclasses.astuple(p), repr(c), c == Counter(1), [f.name for f in dataclasses.fields(Point)])


def test_classes_behave_as_the_standard_decorator_makes_them(fresh):
    ours = behaviour(*make_classes(cdc.dataclass))
    standard = behaviour(*make_classes(dataclasses.dataclass))
    assert ours == standard
    assert not hasattr(dataclasses, "exec")  # the hook is gone once the class is made


def reset():
    cdc._codes, cdc._used, cdc._changed = None, set(), False


def test_second_start_compiles_nothing(fresh, monkeypatch):
    make_classes(cdc.dataclass)
    assert cdc._changed
    cdc._save()
    assert fresh.exists() and oct(fresh.stat().st_mode & 0o777) == "0o600"
    reset()
    monkeypatch.setattr(cdc, "compile", lambda *a, **k: pytest.fail("compiled again"), raising=False)
    assert behaviour(*make_classes(cdc.dataclass)) == behaviour(*make_classes(dataclasses.dataclass))
    assert not cdc._changed


@pytest.mark.parametrize("damage", ["truncate", "garbage", "other interpreter", "not a dict"])
def test_damaged_cache_means_compiling(fresh, damage):
    make_classes(cdc.dataclass)
    cdc._save()
    blob = fresh.read_bytes()
    import marshal
    fresh.write_bytes({"truncate": blob[:len(blob) // 2],
                       "garbage": cdc._HEADER + b"\x00garbage",
                       "other interpreter": blob.replace(sys.version.encode(), b"3.99.0", 1),
                       "not a dict": cdc._HEADER + marshal.dumps([1, 2])}[damage])
    reset()
    assert behaviour(*make_classes(cdc.dataclass)) == behaviour(*make_classes(dataclasses.dataclass))
    assert cdc._changed  # everything compiled, and the cache is written again at exit


def test_cache_others_can_write_is_not_read(fresh, monkeypatch):
    make_classes(cdc.dataclass)
    cdc._save()
    os.chmod(fresh.parent, 0o777)
    reset()
    make_classes(cdc.dataclass)
    assert cdc._changed
    os.chmod(fresh.parent, 0o700)


def test_unwritable_cache_is_not_an_error(tmp_path, monkeypatch, fresh):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # a file where a directory should be
    make_classes(cdc.dataclass)
    cdc._save()


def test_stale_entries_are_dropped_when_the_cache_grows_too_big(fresh, monkeypatch):
    monkeypatch.setattr(cdc, "_MAX_ENTRIES", 3)
    make_classes(cdc.dataclass)
    cdc._load()
    cdc._codes.update({f"stale {n}": compile("pass", "<string>", "exec") for n in range(5)})
    cdc._save()
    reset()
    cdc._load()
    assert not any(source.startswith("stale") for source in cdc._codes)
    assert len(cdc._codes) >= 6  # the two classes' methods


def test_a_cli_start_with_a_warm_cache_compiles_no_dataclass_method(tmp_path):
    """End to end: the first process writes the cache at exit, the second one changes nothing."""
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path))
    code = ("import sandbox.cli, sandbox.api, sandbox.compiled_dataclass as c; "
            "print(c._changed, len(c._used))")
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    changed, used = first.stdout.split()
    assert changed == "True" and int(used) > 100
    assert second.stdout.split() == ["False", used]


def test_the_cli_still_saves_the_cache_at_exit(tmp_path):
    """`sandbox` leaves with gc.freeze() (cli.entry): atexit work such as this save still happens."""
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "sandbox", "lint", "untrusted"], env=env, capture_output=True,
                          text=True)
    assert done.returncode in (0, 1), done.stderr
    assert tmp_path.joinpath(*CACHE_FILE).stat().st_size > 10_000
