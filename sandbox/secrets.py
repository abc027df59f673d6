"""Secrets: values read at launch and handed to the workload as files, never as text anywhere else.

A `[[secrets]]` entry names a host file or a launcher environment variable. Its value is read when
a launch is prepared (not when the profile is loaded, so `sandbox check`, lint and the profile hash
never hold it), travels to the sandbox's init inside the mount plan, and is written there into
/run/secrets/NAME: a file of mode 0400 owned by the sandbox user on a small tmpfs that is made
read-only once the files are in place (mounts.build_plan). Wherever a value could be printed
(an exception, a repr of the plan, a JSON dump), it shows as `<secret NAME>`.
"""
from __future__ import annotations

import errno
import os

from .errors import SetupError

MAX_SIZE = 1 << 20  # a secret is a token, a key or a small config file, not data


class SecretValue(bytes):
    """A secret's bytes. Writes as itself; prints, formats and serialises as `<secret NAME>`."""

    def __new__(cls, data: bytes, name: str):
        value = super().__new__(cls, data)
        value.name = name
        return value

    def __reduce__(self):  # pickled into the fork server's request
        return (SecretValue, (bytes(self), self.name))

    def __repr__(self) -> str:
        return f"<secret {self.name}>"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return format(repr(self), spec)


def label(name: str) -> str:
    return f"<secret {name}>"


def read_values(profile) -> dict[str, SecretValue]:
    """Every secret's current value; SetupError (step "secrets") naming the secret, never its value."""
    values: dict[str, SecretValue] = {}
    for secret in profile.secrets:
        if secret.file is not None:
            values[secret.name] = SecretValue(_read_file(secret.name, secret.file), secret.name)
        else:
            text = os.environ.get(secret.env)
            if text is None:
                raise SetupError("secrets", errno.ENOENT, f"{label(secret.name)}: the launcher's environment "
                                 f"has no variable {secret.env}")
            data = os.fsencode(text)
            if len(data) > MAX_SIZE:
                raise SetupError("secrets", errno.EFBIG, f"{label(secret.name)}: ${secret.env} is larger than 1M")
            values[secret.name] = SecretValue(data, secret.name)
    return values


def _read_file(name: str, path: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise SetupError("secrets", exc.errno or 0, f"{label(name)}: {path}: {exc.strerror}") from None
    try:
        if not _is_regular(fd):
            raise SetupError("secrets", errno.EINVAL, f"{label(name)}: {path}: not a regular file")
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_SIZE:
                raise SetupError("secrets", errno.EFBIG, f"{label(name)}: {path}: larger than 1M")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise SetupError("secrets", exc.errno or 0, f"{label(name)}: {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


def _is_regular(fd: int) -> bool:
    import stat
    return stat.S_ISREG(os.fstat(fd).st_mode)

