"""Baselines: what a trusted run executed and where it connected, to compare later runs with.

    {"format": "sandbox-baseline/1",
     "learned_from": ["make", "test"], "time": "2026-...Z",
     "executables": ["/usr/bin/make", "/usr/bin/gcc", "/usr/lib/gcc/x86_64-linux-gnu/12/cc1", ...],
     "network": ["connect tcp 127.0.0.1:8080", "bind tcp 127.0.0.1:0", "listen tcp 127.0.0.1:*"]}

`sandbox learn` writes one next to the learned profile; `[monitor] baseline = "FILE"` turns every
exec and network event outside it into an `anomaly` event. Executables are paths inside the sandbox
or [exec] allow patterns (`*`, `?`, `[..]` within a component, a final `/**`); network entries are
"KIND PROTOCOL ADDRESS[:PORT]" with shell wildcards (`connect tcp 10.0.0.*:443`).
"""
from __future__ import annotations

import fnmatch
import json
import time

FORMAT = "sandbox-baseline/1"


class BaselineError(ValueError):
    """A baseline file that cannot be used: one line naming the file and what is wrong."""


class Baseline:
    def __init__(self, executables=(), network=(), path: str = ""):
        self.executables = tuple(executables)
        self.network = tuple(network)
        self.path = path
        self._exact_exec = {p for p in self.executables if not any(c in p for c in "*?[")}
        self._exact_net = {n for n in self.network if not any(c in n for c in "*?[")}

    @classmethod
    def load(cls, path: str) -> "Baseline":
        try:
            with open(path, "rb") as handle:
                data = json.loads(handle.read(16 << 20))
        except OSError as exc:
            raise BaselineError(f"{path}: cannot read the baseline: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise BaselineError(f"{path}: not a baseline (invalid JSON: {exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BaselineError(f"{path}: not a baseline (expected \"format\": \"{FORMAT}\")")
        for key in ("executables", "network"):
            value = data.get(key, [])
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise BaselineError(f"{path}: {key}: expected an array of strings")
        bad = [p for p in data.get("executables", []) if not p.startswith("/")]
        if bad:
            raise BaselineError(f"{path}: executables: expected absolute paths inside the sandbox, found {bad[0]!r}")
        return cls(data.get("executables", []), data.get("network", []), path)

    def knows_exec(self, path: str) -> bool:
        if path in self._exact_exec:
            return True
        from ..execlist import matches
        return any(matches(pattern, path) for pattern in self.executables if pattern not in self._exact_exec)

    def knows_network(self, line: str) -> bool:
        if line in self._exact_net:
            return True
        return any(fnmatch.fnmatchcase(line, pattern) for pattern in self.network if pattern not in self._exact_net)


def document(executables, network, argv=()) -> dict:
    return {"format": FORMAT, "learned_from": list(argv),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "executables": sorted(set(executables)), "network": sorted(set(network))}


def dumps(data: dict) -> str:
    return json.dumps(data, indent=2) + "\n"
