"""The `sandbox` program (console script and ``python -m sandbox``): the CLI as a short-lived process.

How the process starts and ends is a whole program's decision, so it is made here and not in
cli.py, whose main() tests also call in-process:

- no garbage collections during start-up: the imports build ~20k objects that live until exit, and
  collecting among them frees nothing (~5 ms of a ~90 ms `sandbox run`);
- once start-up is over (``startup_done()``, called by `run` and `learn` just before their
  launch, whose supervision may last hours), what it built is frozen, out of reach of later
  collections, and collection resumes for whatever the run itself allocates; the other commands
  are short and end with collection still off;
- the end: after every atexit handler has run and the standard streams are flushed, the process
  leaves with os._exit (not when coverage runs, whose handler was registered before ours, or
  with SANDBOX_NO_FAST_EXIT set). The interpreter's own shutdown would run full collections and
  free every object one by one, ~15 ms for nothing the kernel does not do at once.
"""
import atexit
import gc
import os
import sys

_running = False
_status = 1  # what an exception escaping main() ends with (Python prints it first)


def entry():
    global _running, _status
    _running = True
    gc.disable()
    # Registered first, it runs last. Not when something that registers its own handler may have
    # started before us (coverage, from a .pth file): that handler would come after ours, and
    # never run. (atexit has no public way to count handlers; SANDBOX_NO_FAST_EXIT turns it off.)
    if "coverage" not in sys.modules and not os.environ.get("SANDBOX_NO_FAST_EXIT"):
        atexit.register(_end_now)
    try:
        from .cli import main
        result = main()
        _status = _exit_status(result)
        return result
    except SystemExit as exc:
        _status = _exit_status(exc.code)
        raise
    finally:
        gc.freeze()  # should the end come another way: shutdown's collections skip frozen objects


def startup_done() -> None:
    """Called when the program's real work (a launch) begins; no effect outside the program (API,
    tests). Root also sheds its supplementary groups here: no sandbox ever gets them, and with none
    the launch can clone the sandbox's init directly instead of forking an extra process to drop
    them (child.spawn)."""
    if not _running:
        return
    if not gc.isenabled():
        gc.freeze()
        gc.enable()
    from .child import shed_root_groups  # imported with the launcher by now
    shed_root_groups()


def _exit_status(code) -> int:
    """The status Python gives sys.exit(code): None is 0, an int itself, anything else (printed) 1."""
    if code is None:
        return 0
    return code & 0xFF if isinstance(code, int) else 1


def _end_now() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass  # a reader that went away, or a closed stream: nothing more can be said
    os._exit(_status)
