"""Seccomp policy engine: syscall groups, policies, compilation, loading, Docker interop.

Typical use by the launcher:

    policy, problems = parse_section(profile.get("seccomp", {}), profile_path)
    bpf = compile_bpf(policy) if policy else None     # parent: cached, may use libseccomp
    ...                                               # child, last step before execve:
    prctl(PR_SET_NO_NEW_PRIVS, 1); load_bpf(bpf)

The names below are imported on first use (PEP 562): a launch needs the policy parser, the
compile cache and load_bpf, not Docker interop, describe, learn or the probes.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "load_bpf": "bpf",
    "default_policy": "builtin", "strict_policy": "builtin",
    "compile_bpf": "compile", "export_pfc": "compile", "policy_digest": "compile",
    "describe": "describe",
    "Widening": "diff", "widenings": "diff",
    "export_docker": "docker", "import_docker": "docker", "policy_to_profile_toml": "docker",
    "GROUPS": "groups", "expand": "groups", "expand_group": "groups",
    "suggest_policy": "learn",
    "Action": "model", "ArgCondition": "model", "Rule": "model", "SeccompPolicy": "model",
    "Recorder": "notify", "Violation": "notify", "format_violations": "notify", "reporting_policy": "notify",
    "evaluate": "plan",
    "builtin_policy": "policy", "parse_section": "policy", "to_toml_dict": "policy",
    "confine_self": "probe", "probe": "probe", "run_under": "probe", "set_no_new_privs": "probe",
}

__all__ = [
    "Action", "ArgCondition", "Rule", "SeccompPolicy", "GROUPS", "expand", "expand_group",
    "parse_section", "to_toml_dict", "builtin_policy", "default_policy", "strict_policy",
    "compile_bpf", "export_pfc", "policy_digest", "load_bpf", "describe", "evaluate",
    "Widening", "widenings",
    "import_docker", "export_docker", "policy_to_profile_toml",
    "Recorder", "Violation", "format_violations", "reporting_policy", "suggest_policy",
    "confine_self", "probe", "run_under", "set_no_new_privs",
]


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
