"""sandbox: run untrusted code in minimal containers built directly from Linux primitives.

    import sandbox
    profile = sandbox.load_profile("untrusted")
    result = sandbox.run(profile, ["/usr/bin/python3", "-c", "print(1)"], capture_output=True)
    result.exit_code, result.stdout

The names below are loaded on first use, so `import sandbox` stays cheap.
"""
__all__ = ["CommandFailed", "ExecError", "ForkServer", "Launch", "LimitsUnavailable", "Problem", "Profile",
           "ProfileError", "Result", "SandboxError", "SetupError", "builtin_profile_names", "load_profile",
           "profile_from_dict", "run"]
# subprocess's stream constants, for run(stdout=sandbox.PIPE, ...); subprocess's own work too
PIPE, STDOUT, DEVNULL = -1, -2, -3


def __getattr__(name):
    if name in __all__:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
