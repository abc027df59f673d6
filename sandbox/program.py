"""The `sandbox` program (console script and ``python -m sandbox``): the CLI as a short-lived process.

The garbage collector's schedule is a whole program's decision, so it is made here and not in
cli.py, whose main() tests also call in-process:

- no collections during start-up: the imports build ~20k objects that live until exit, and
  collecting among them frees nothing (~5 ms of a ~100 ms `sandbox run`);
- once start-up is over (``startup_done()``, called by `run` and `learn` just before their
  launch, whose supervision may last hours), what it built is frozen, out of reach of later
  collections, and collection resumes for whatever the run itself allocates; the other commands
  are short and end with collection still off;
- at exit everything is frozen, so interpreter shutdown skips its full collections over every
  object (~10 ms). Finalization still runs: atexit handlers, flushing the standard streams.
"""
import gc

_running = False


def entry():
    global _running
    _running = True
    gc.disable()
    try:
        from .cli import main
        return main()
    finally:
        gc.freeze()


def startup_done() -> None:
    """Called when the program's real work begins; no effect outside the program (API, tests)."""
    if _running and not gc.isenabled():
        gc.freeze()
        gc.enable()
