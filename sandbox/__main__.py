from .program import entry

raise SystemExit(entry())
