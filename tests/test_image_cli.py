"""`sandbox image pull|ls|inspect|rm|prune` and the errors of image profiles: one line, exit 125."""
from __future__ import annotations

import json

import imagebuild


def test_image_commands(tmp_path, sandbox_cli):
    layout = tmp_path / "busybox"
    digests = imagebuild.busybox_image(str(layout))
    env = {"SANDBOX_IMAGE_STORE": str(tmp_path / "store")}
    proc = sandbox_cli("image", "pull", "-q", f"oci:{layout}:latest", env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == digests["manifest"], proc.stderr
    proc = sandbox_cli("image", "ls", env=env)
    assert proc.returncode == 0 and digests["manifest"][7:19] in proc.stdout and f"oci:{layout}:latest" in proc.stdout
    listed = json.loads(sandbox_cli("image", "ls", "--json", env=env).stdout)
    assert [i["id"] for i in listed] == [digests["manifest"]]
    inspected = json.loads(sandbox_cli("image", "inspect", digests["config"][7:20], env=env).stdout)
    assert inspected["config_json"]["config"]["Cmd"] == ["/bin/sh"]
    proc = sandbox_cli("image", "pull", "-q", f"oci:{layout}:latest", "--digest", "sha256:" + "c" * 64, env=env)
    assert proc.returncode == 125 and "not the pinned" in proc.stderr and proc.stderr.count("\n") == 1
    proc = sandbox_cli("image", "rm", f"oci:{layout}:latest", env=env)
    assert proc.returncode == 0 and digests["manifest"] in proc.stdout, proc.stderr
    proc = sandbox_cli("image", "prune", env=env)
    assert proc.returncode == 0 and proc.stdout.count("removed layer") == 1
    proc = sandbox_cli("image", "inspect", "nothing-here", env=env)
    assert proc.returncode == 125 and "no such image" in proc.stderr


def test_bad_image_keys_name_file_and_key(tmp_path, sandbox_cli):
    env = {"SANDBOX_IMAGE_STORE": str(tmp_path / "store")}
    cases = {
        'ref = "debian:12"': "image.ref",
        'ref = "oci:/x"\ndigest = "sha256:short"': "image.digest",
        'ref = "docker://r.example.com/a"\nallowed_registries = ["not a host!"]': "image.allowed_registries[0]",
        'ref = "oci:/nonexistent/layout"': "image:",
    }
    for body, key in cases.items():
        profile = tmp_path / "p.toml"
        profile.write_text(f'extends = "untrusted"\n[image]\n{body}\n')
        proc = sandbox_cli("run", str(profile), "--", "/bin/true", env=env)
        assert proc.returncode == 125, proc.stderr
        assert proc.stderr.count("\n") == 1 and key in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    profile = tmp_path / "root.toml"
    profile.write_text(f'[filesystem]\nroot = "{tmp_path}"\n[image]\nref = "oci:/x"\n')
    proc = sandbox_cli("check", str(profile), env=env)
    assert proc.returncode == 125 and "filesystem.root" in proc.stderr
