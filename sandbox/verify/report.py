"""Render probe results: a table grouped by layer, JSON, and the exit status.

Results are the dicts probe.py produces (id, layer, description, status,
expected, observed, hint). Colour is used only when the output is a terminal
and NO_COLOR is unset (https://no-color.org).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from typing import IO, Iterable

from sandbox.verify.probe import FAIL, LAYERS, PASS, SKIP, WARN

_COLOURS = {PASS: "32", FAIL: "31;1", WARN: "33", SKIP: "2"}


def counts(results: Iterable[dict]) -> dict[str, int]:
    out = {PASS: 0, FAIL: 0, WARN: 0, SKIP: 0}
    for r in results:
        out[r["status"]] = out.get(r["status"], 0) + 1
    return out


def summary_line(results: list[dict]) -> str:
    """'31 passed, 0 failed, 2 warnings' (+ ', N skipped' when any)."""
    c = counts(results)
    line = f"{c[PASS]} passed, {c[FAIL]} failed, {c[WARN]} warning{'' if c[WARN] == 1 else 's'}"
    return line + (f", {c[SKIP]} skipped" if c[SKIP] else "")


def exit_status(results: list[dict]) -> int:
    return 1 if any(r["status"] == FAIL for r in results) else 0


def to_json(results: list[dict], **extra) -> str:
    c = counts(results)
    doc = {**extra, "summary": {"passed": c[PASS], "failed": c[FAIL], "warnings": c[WARN],
                                "skipped": c[SKIP]}, "results": results}
    return json.dumps(doc, indent=2)


def use_colour(stream: IO[str]) -> bool:
    return "NO_COLOR" not in os.environ and hasattr(stream, "isatty") and stream.isatty()


def _paint(text: str, status: str, colour: bool) -> str:
    return f"\033[{_COLOURS[status]}m{text}\033[0m" if colour and status in _COLOURS else text


def _layer_order(layer: str) -> int:
    return LAYERS.index(layer) if layer in LAYERS else len(LAYERS)


def render(results: list[dict], colour: bool = False, width: int | None = None,
           verbose: bool = False) -> str:
    """The table: one section per layer, one row per check.

    FAIL rows always show what was expected and the remediation; other rows
    show them only when verbose.
    """
    width = width or shutil.get_terminal_size((100, 24)).columns
    id_width = min(max((len(r["id"]) for r in results), default=10), 40)
    lines: list[str] = []
    for layer in sorted({r["layer"] for r in results}, key=_layer_order):
        rows = [r for r in results if r["layer"] == layer]
        c = counts(rows)
        lines.append(f"{layer} ({c[PASS]}/{len(rows)} passed)")
        for r in rows:
            status = _paint(f"{r['status']:<4}", r["status"], colour)
            observed = _clip(r["observed"], width - id_width - 10)
            lines.append(f"  {status}  {r['id']:<{id_width}}  {observed}")
            if r["status"] == FAIL or verbose:
                pad = " " * (8 + id_width)
                if r["expected"]:
                    lines.append(f"{pad}expected: {r['expected']}")
                if r["hint"]:
                    lines.append(f"{pad}fix: {r['hint']}")
        lines.append("")
    lines.append(summary_line(results))
    return "\n".join(lines)


def _clip(text: str, room: int) -> str:
    room = max(room, 20)
    return text if len(text) <= room else text[:room - 1] + "…"


def print_report(results: list[dict], stream: IO[str] | None = None, as_json: bool = False,
                 verbose: bool = False) -> int:
    """Write the report to stream (stdout); return the exit status."""
    stream = stream or sys.stdout
    if as_json:
        stream.write(to_json(results) + "\n")
    else:
        stream.write(render(results, colour=use_colour(stream), verbose=verbose) + "\n")
    return exit_status(results)


def load(text: str) -> list[dict]:
    """Results from probe.py --json output (or a bare list)."""
    doc = json.loads(text)
    return doc["results"] if isinstance(doc, dict) else doc
