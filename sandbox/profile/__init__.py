"""Profiles: the data model, the loader and the validator.

The names below are loaded on first use (PEP 562): importing the data model alone
(sandbox.profile.model, which the launch plan and the OCI runtime need) does not load the
TOML loader and validator.
"""
__all__ = ["Profile", "builtin_profile_names", "load_profile", "profile_from_dict", "resolve_profile"]


def __getattr__(name):
    if name == "Profile":
        from .model import Profile
        return Profile
    if name in __all__:
        from . import load
        return getattr(load, name)
    raise AttributeError(f"module 'sandbox.profile' has no attribute {name!r}")
