"""Profiles: the data model, the loader and the validator."""
from .load import builtin_profile_names, load_profile, profile_from_dict, resolve_profile
from .model import Profile

__all__ = ["Profile", "builtin_profile_names", "load_profile", "profile_from_dict", "resolve_profile"]
