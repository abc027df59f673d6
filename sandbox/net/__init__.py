"""Network segmentation for `[network] mode = "bridge"` (see docs/network.md).

The launcher's interface, in launch order:

    attachment = net.prepare(profile, sandbox_id)   # before the fork (None unless bridge)
    attachment.userns_fd                            # rootless: the first process joins it first
    attachment.write_id_maps(pid, idmap)            # rootless: instead of namespaces.write_id_maps
    attachment.attach(init_pid)                     # init exists in its new network namespace
    ...
    attachment.detach()                             # idempotent; also after a failed launch
    net.gc()                                        # what killed launchers left behind

Imports nothing heavy here: the profile loader imports sandbox.net.spec on every launch.
"""
from __future__ import annotations


def prepare(profile, sandbox_id: str | None = None):
    """An Attachment for a bridge-mode profile (its segment exists, its address is leased, its
    egress names are resolved), or None for any other mode."""
    if profile.network.mode != "bridge" or not profile.namespaces.network:
        return None
    from .attach import Attachment
    return Attachment.prepare(profile, sandbox_id)


def attach(profile, init_pid: int, sandbox_id: str | None = None):
    """prepare() and attach() in one, for root launches (rootless ones need prepare() before the
    fork: their first process must join the segment's user namespace)."""
    attachment = prepare(profile, sandbox_id)
    if attachment is not None:
        try:
            attachment.attach(init_pid)
        except BaseException:
            attachment.detach()
            raise
    return attachment


def gc() -> list[str]:
    """Remove what launchers that were killed left: members whose sandbox is gone (their rules,
    relays, leases, /etc/hosts lines), then segments without members (namespaces, pasta, state)."""
    from .state import collect
    return collect()
