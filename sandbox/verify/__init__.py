"""The verifier (`sandbox verify`) and the stand-alone probe (`sandbox probe`, probe.py)."""


def verify_profile(profile, *, stress: bool = False):
    from .verifier import verify_profile as verify
    return verify(profile, stress=stress)


__all__ = ["verify_profile"]
