"""Images built offline for the image and scanner tests: layers as tar bytes, OCI layouts on disk.

Nothing here talks to a registry; tests that need one start Debian's docker-registry themselves
(see `Registry`) and push with skopeo.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "ls", "cat", "id", "echo", "env", "pwd", "touch", "mkdir", "stat", "whoami", "true",
           "false", "test", "readlink", "head", "wc", "sleep", "grep", "chmod", "ln", "rm", "mount", "cut")


def member(name: str, kind: str = "file", data: bytes = b"", mode: int | None = None, uid: int = 0, gid: int = 0,
           link: str = "", major: int = 0, minor: int = 0, pax: dict | None = None) -> tuple:
    return (name, kind, data, mode, uid, gid, link, major, minor, pax or {})


def layer_tar(members: list[tuple]) -> bytes:
    """An uncompressed tar layer from member() tuples, written exactly as given (hostile ones too)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data, mode, uid, gid, link, major, minor, pax in members:
            info = tarfile.TarInfo(name)
            info.uid, info.gid, info.mtime = uid, gid, 1_700_000_000
            info.pax_headers = dict(pax)
            kinds = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                     "hardlink": tarfile.LNKTYPE, "char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE,
                     "fifo": tarfile.FIFOTYPE}
            info.type = kinds[kind]
            info.mode = mode if mode is not None else (0o755 if kind == "dir" else 0o644)
            info.linkname = link
            info.devmajor, info.devminor = major, minor
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buffer.getvalue()


def busybox_members(user: str = "") -> list[tuple]:
    with open(BUSYBOX, "rb") as handle:
        binary = handle.read()
    members = [member("bin", "dir"), member("bin/busybox", data=binary, mode=0o755)]
    members += [member(f"bin/{name}", "symlink", link="busybox") for name in APPLETS]
    members += [member(d, "dir") for d in ("etc", "root", "home", "var", "proc", "dev")]
    members.append(member("tmp", "dir", mode=0o1777))
    members += [member("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
                       b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
                member("etc/group", data=b"root:x:0:\napp:x:1000:\nnogroup:x:65534:\n"),
                member("home/app", "dir", uid=1000, gid=1000)]
    return members


def oci_layout(directory: str, layers: list[bytes], config: dict | None = None, tag: str = "latest",
               compress: bool = True) -> dict:
    """Write an OCI image layout; returns {"manifest": digest, "config": digest, "diff_ids": [...]}."""
    os.makedirs(os.path.join(directory, "blobs", "sha256"), exist_ok=True)

    def blob(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(directory, "blobs", "sha256", digest), "wb") as handle:
            handle.write(data)
        return "sha256:" + digest

    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    descriptors = []
    for layer in layers:
        data = gzip.compress(layer, mtime=0) if compress else layer
        descriptors.append({"mediaType": "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compress else ""),
                            "digest": blob(data), "size": len(data)})
    full_config = {"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
                   "config": {}, "rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": []}
    full_config.update(config or {})
    full_config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    config_bytes = json.dumps(full_config).encode()
    config_digest = blob(config_bytes)
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                           "size": len(config_bytes)}, "layers": descriptors}
    manifest_bytes = json.dumps(manifest).encode()
    manifest_digest = blob(manifest_bytes)
    index_path = os.path.join(directory, "index.json")
    index = {"schemaVersion": 2, "manifests": []}
    if os.path.exists(index_path):
        with open(index_path) as handle:
            index = json.load(handle)
    index["manifests"] = [m for m in index["manifests"]
                          if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag]
    index["manifests"].append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
                               "size": len(manifest_bytes),
                               "annotations": {"org.opencontainers.image.ref.name": tag}})
    with open(index_path, "w") as handle:
        json.dump(index, handle)
    with open(os.path.join(directory, "oci-layout"), "w") as handle:
        json.dump({"imageLayoutVersion": "1.0.0"}, handle)
    return {"manifest": manifest_digest, "config": config_digest, "diff_ids": diff_ids,
            "layers": [d["digest"] for d in descriptors]}


def busybox_image(directory: str, tag: str = "latest", config: dict | None = None, extra: list | None = None) -> dict:
    base = {"config": {"Env": ["PATH=/bin", "GREETING=hello from the image"], "Cmd": ["/bin/sh"],
                       "WorkingDir": "/home/app"}}
    base.update(config or {})
    layers = [layer_tar(busybox_members())]
    if extra:
        layers.append(layer_tar(extra))
    return oci_layout(directory, layers, base, tag=tag)


DPKG_STATUS = b"""Package: libc6
Status: install ok installed
Priority: optional
Architecture: amd64
Version: 2.36-9+deb12u1
Description: GNU C Library

Package: openssl
Status: install ok installed
Architecture: amd64
Source: openssl
Version: 3.0.11-1~deb12u1
Description: Secure Sockets Layer toolkit

Package: removed-thing
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1
Description: gone

"""


def debian_like_members() -> list[tuple]:
    """A small Debian-like tree: dpkg status, a Python dist-info, an npm package, and planted problems."""
    return [
        member("var", "dir"), member("var/lib", "dir"), member("var/lib/dpkg", "dir"),
        member("var/lib/dpkg/status", data=DPKG_STATUS),
        member("etc/os-release", data=b'ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'),
        member("usr", "dir"), member("usr/lib", "dir"), member("usr/lib/python3", "dir"),
        member("usr/lib/python3/dist-packages", "dir"),
        member("usr/lib/python3/dist-packages/requests-2.25.0.dist-info", "dir"),
        member("usr/lib/python3/dist-packages/requests-2.25.0.dist-info/METADATA",
               data=b"Metadata-Version: 2.1\nName: requests\nVersion: 2.25.0\n"),
        member("usr/lib/node_modules", "dir"), member("usr/lib/node_modules/lodash", "dir"),
        member("usr/lib/node_modules/lodash/package.json", data=b'{"name": "lodash", "version": "4.17.20"}'),
        member("usr/bin", "dir"),
        member("usr/bin/su", data=b"#!/bin/sh\n", mode=0o4755),
        member("usr/bin/ping", data=b"#!/bin/sh\n", mode=0o755,
               pax={"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00" + "\x00" * 12}),
        member("srv", "dir"), member("srv/drop", "dir", mode=0o777),
        member("srv/app", "dir"),
        member("srv/app/.env", data=b"DATABASE_URL=postgres://app:s3cretpassw0rd@db/app\n"),
        member("srv/app/id_rsa", data=b"-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\n-----END RSA PRIVATE KEY-----\n"),
        member("srv/app/settings.ini", data=b"[aws]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\n"),
        member("srv/app/orphan", data=b"x", uid=4242, gid=4242),
        member("srv/app/escape", "symlink", link="../../../../etc/shadow"),
    ]


class Registry:
    """Debian's docker-registry on a free loopback port, its config and storage in `directory`."""

    def __init__(self, directory: str):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.host = f"127.0.0.1:{self.port}"
        config = os.path.join(directory, "config.yml")
        with open(config, "w") as handle:
            handle.write(f"""version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: {directory}/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{self.port}
""")
        self.log = open(os.path.join(directory, "registry.log"), "wb")
        self.process = subprocess.Popen(["docker-registry", "serve", config], stdin=subprocess.DEVNULL,
                                        stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"docker-registry did not start: {open(self.log.name).read()[-500:]}")

    def push(self, source: str, name: str) -> None:
        subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--preserve-digests", source,
                        f"docker://{self.host}/{name}"], check=True, stdin=subprocess.DEVNULL, timeout=120)

    def blob_path(self, digest: str) -> str:
        hex_digest = digest.split(":")[1]
        return os.path.join(self.directory, "data", "docker/registry/v2/blobs/sha256", hex_digest[:2], hex_digest, "data")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def registry_available() -> bool:
    return shutil.which("docker-registry") is not None and shutil.which("skopeo") is not None
