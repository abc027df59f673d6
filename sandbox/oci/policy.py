"""The place where a translated bundle is checked against a policy before anything is created.

Translation (spec.py) says what config.json asks for; a policy says what it may ask for. Today
there is no policy: every bundle the runtime can honour runs as runc would run it. The runtime
floor (the next step: a user namespace for every container, no_new_privs, a seccomp floor,
capability ceilings, `org.sandbox.*` annotations) plugs in here: `check()` gets the bundle and
returns the bundle to run (possibly with a raised plan), or raises a SpecError-like refusal
naming the config field and the rule.
"""
from __future__ import annotations


def check(bundle, *, log=None):
    """The bundle to create (unchanged: no floor yet)."""
    return bundle
