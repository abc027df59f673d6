"""Seccomp policy engine: syscall groups, policies, compilation, loading, Docker interop.

Typical use by the launcher:

    policy, problems = parse_section(profile.get("seccomp", {}), profile_path)
    bpf = compile_bpf(policy) if policy else None     # parent: cached, may use libseccomp
    ...                                               # child, last step before execve:
    prctl(PR_SET_NO_NEW_PRIVS, 1); load_bpf(bpf)
"""
from .bpf import load_bpf
from .builtin import default_policy, strict_policy
from .compile import compile_bpf, export_pfc, policy_digest
from .describe import describe
from .docker import export_docker, import_docker, policy_to_profile_toml
from .groups import GROUPS, expand, expand_group
from .learn import suggest_policy
from .model import Action, ArgCondition, Rule, SeccompPolicy
from .notify import Recorder, Violation, format_violations, reporting_policy
from .plan import evaluate
from .policy import builtin_policy, parse_section, to_toml_dict
from .probe import confine_self, probe, run_under, set_no_new_privs

__all__ = [
    "Action", "ArgCondition", "Rule", "SeccompPolicy", "GROUPS", "expand", "expand_group",
    "parse_section", "to_toml_dict", "builtin_policy", "default_policy", "strict_policy",
    "compile_bpf", "export_pfc", "policy_digest", "load_bpf", "describe", "evaluate",
    "import_docker", "export_docker", "policy_to_profile_toml",
    "Recorder", "Violation", "format_violations", "reporting_policy", "suggest_policy",
    "confine_self", "probe", "run_under", "set_no_new_privs",
]
