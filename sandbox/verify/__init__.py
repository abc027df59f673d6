"""The verifier (`sandbox verify`) and the stand-alone probe (`sandbox probe`, probe.py)."""


def verify_profile(profile, *, stress: bool = False, against=None):
    from .verifier import verify_profile as verify
    return verify(profile, stress=stress, against=against)


__all__ = ["verify_profile"]
