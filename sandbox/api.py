"""The public Python API, for CI systems and tools that launch many sandboxes."""
from .errors import ExecError, LimitsUnavailable, Problem, ProfileError, SandboxError, SetupError
from .forkserver import ForkServer
from .launcher import Launch, Result, run
from .profile import Profile, builtin_profile_names, load_profile, profile_from_dict

__all__ = ["ExecError", "ForkServer", "Launch", "LimitsUnavailable", "Problem", "Profile", "ProfileError",
           "Result", "SandboxError", "SetupError", "builtin_profile_names", "load_profile", "profile_from_dict", "run"]
