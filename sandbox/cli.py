"""The `sandbox` command: a thin layer over the Python API.

Exit status of `sandbox run`: the workload's own; 128+N when it died of signal N; 124 on timeout;
125 when the sandbox itself failed (bad profile, bad option, setup error); 126 command not
executable; 127 command not found. Every error is one line prefixed `sandbox:`.
Imports are deferred into the commands: start-up time is part of every launch.
"""
from __future__ import annotations

import json
import os
import sys

import click

from .cli_run import EXIT_USAGE, fail as _fail, warn as _warn  # one wording of errors for every command


class _Group(click.Group):
    def main(self, *args, **kwargs):
        try:
            return super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("sandbox: aborted", err=True)
            sys.exit(EXIT_USAGE)
        except click.ClickException as exc:
            click.echo(f"sandbox: {exc.format_message()}", err=True)
            sys.exit(EXIT_USAGE)
        except KeyboardInterrupt:
            sys.exit(130)
        except OSError as exc:  # the environment, not a bug: say what, no traceback
            where = f" {exc.filename}" if exc.filename else ""
            click.echo(f"sandbox: error:{where}: {exc.strerror or exc}", err=True)
            sys.exit(EXIT_USAGE)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sandbox", prog_name="sandbox")
def main():
    """Run untrusted code in a minimal container built from Linux primitives."""


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("profile")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--bind", "binds", multiple=True, metavar="SRC[:DST[:ro|rw]]", help="Bind a host path (read-only unless :rw).")
@click.option("--env", "envs", multiple=True, metavar="NAME=VALUE", help="Set a variable inside.")
@click.option("--cwd", metavar="DIR", help="Working directory inside.")
@click.option("--timeout", metavar="DURATION", help="Wall-clock limit, e.g. 30s or 5m.")
@click.option("--network", type=click.Choice(["none", "host", "bridge"]), help="Override the network mode.")
@click.option("--memory", metavar="SIZE", help="Memory limit, e.g. 512M.")
@click.option("--cpus", type=float, metavar="N", help="CPU bandwidth in cores, e.g. 0.5.")
@click.option("--pids", type=int, metavar="N", help="Maximum number of processes and threads.")
@click.option("--tty", is_flag=True, help="Give the workload a fresh pseudo-terminal.")
@click.option("--stats", is_flag=True, help="Print what the run used, on stderr.")
@click.option("--result-json", type=click.Path(dir_okay=False, writable=True), help="Write the result as JSON.")
@click.option("--verify", "verify_first", is_flag=True, help="Verify the isolation first; refuse to run on a failure.")
@click.option("--report-violations", is_flag=True, help="Report denied system calls after the run.")
@click.option("-q", "--quiet", is_flag=True, help="No warnings.")
def run(profile, command, binds, envs, cwd, timeout, network, memory, cpus, pids, tty, stats, result_json,
        verify_first, report_violations, quiet):
    """Run COMMAND (default: the profile's) in a sandbox built from PROFILE (a file or built-in name).

    Options go before `--`; everything after it is the command."""
    from . import cgprime
    cgprime.start()  # the cgroup-migration grace period, paid behind the imports (see cgprime.py)
    from .cli_run import execute
    limits = {name: value for name, value in (("memory", memory), ("cpus", cpus), ("pids", pids))
              if value is not None}
    execute(profile, command, binds, envs, cwd, timeout, network, tty, stats, result_json, verify_first,
            report_violations, quiet, limits=limits)


@main.command()
@click.argument("profile")
def check(profile):
    """Validate PROFILE and print it fully resolved, as TOML."""
    from .api import load_profile
    from .errors import SandboxError
    from .profile.dump import to_toml
    from .errors import ProfileError
    try:
        loaded = load_profile(profile)
    except ProfileError as exc:  # every problem, one line each
        for problem in exc.problems:
            click.echo(f"sandbox: {problem}", err=True)
        sys.exit(exc.exit_code)
    except SandboxError as exc:
        _fail(exc)
    click.echo(to_toml(loaded), nl=False)


@main.command()
def profiles():
    """List the built-in profiles."""
    from .errors import SandboxError
    from .profile.load import builtin_profile_names, read_toml
    for name, path in builtin_profile_names().items():
        try:
            description = read_toml(path).get("description", "")
        except SandboxError:
            description = "(unreadable)"
        click.echo(f"{name:<16} {description}")


@main.command()
@click.argument("profile")
@click.option("--json", "as_json", is_flag=True, help="Findings as JSON.")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too, not only on dangers.")
def lint(profile, as_json, strict):
    """Report every relaxation of the secure defaults in PROFILE, and risky choices."""
    from .api import load_profile
    from .errors import SandboxError
    from .lint import lint as lint_profile
    try:
        loaded = load_profile(profile)
    except SandboxError as exc:
        _fail(exc)
    findings = lint_profile(loaded)
    if as_json:
        click.echo(json.dumps([f.__dict__ for f in findings], indent=2))
    else:
        for finding in findings:
            click.echo(str(finding))
        counts = {s: sum(f.severity == s for f in findings) for s in ("danger", "warning", "info")}
        click.echo(f"{loaded.name}: {counts['danger']} danger, {counts['warning']} warnings, {counts['info']} info")
    failing = {"danger", "warning"} if strict else {"danger"}
    sys.exit(1 if any(f.severity in failing for f in findings) else 0)


@main.command()
@click.option("--log", "log_file", type=click.Path(dir_okay=False), help="Audit log to read (default: this user's).")
@click.option("-n", "--tail", default=20, show_default=True, help="How many launches to show.")
@click.option("--json", "as_json", is_flag=True, help="Raw records, one JSON object a line.")
def audit(log_file, tail, as_json):
    """Show the audit trail of recent launches."""
    from pathlib import Path
    from .audit import log_path, read
    path = Path(log_file) if log_file else log_path()
    try:
        records = read(path)
    except FileNotFoundError:
        click.echo(f"sandbox: no audit log at {path} yet", err=True)
        sys.exit(0)
    ends = {r.get("id"): r for r in records if r.get("event") == "end"}
    starts = [r for r in records if r.get("event") == "start"][-tail:]
    for start in starts:
        end = ends.get(start.get("id"), {})
        if as_json:
            click.echo(json.dumps({**start, "end": end}))
            continue
        outcome = ("running or killed" if not end else f"error: {end['error']}" if "error" in end
                   else f"exit {end.get('exit_code')}")
        click.echo(f"{start.get('time')}  {start.get('user')}  {start.get('profile')}  "
                   f"{' '.join(start.get('argv', []))[:60]}  -> {outcome}"
                   + (f"  [{len(start.get('relaxations', []))} relaxations]" if start.get("relaxations") else ""))


@main.command()
@click.argument("profile")
@click.option("--json", "as_json", is_flag=True, help="The full results as JSON.")
@click.option("--stress", is_flag=True, help="Also allocate and fork past the limits (in the sandbox).")
@click.option("--against", metavar="PROFILE", help="Judge by another profile's promises (e.g. untrusted).")
def verify(profile, as_json, stress, against):
    """Launch PROFILE with a probe and check, one by one, that its isolation holds.

    Exit 0 when every expectation holds, 1 when any fails, 125 when it could not run."""
    from .api import load_profile
    from .errors import SandboxError
    from .verify import verify_profile
    from .verify.report import use_colour
    try:
        outcome = verify_profile(load_profile(profile), stress=stress,
                                 against=load_profile(against) if against else None)
    except SandboxError as exc:
        _fail(exc)
    for warning in outcome.warnings:
        if not as_json:
            _warn(warning)
    click.echo(outcome.to_json() if as_json else outcome.render(colour=use_colour(sys.stdout)))
    sys.exit(0 if outcome.ok else 1)


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("probe_args", nargs=-1, type=click.UNPROCESSED)
def probe(probe_args):
    """Probe the isolation of wherever this runs, with no profile (see sandbox/verify/probe.py).

    Options: --json, --context FILE|JSON, --stress, --outside PID."""
    from .verify.probe import main as probe_main
    sys.exit(probe_main(list(probe_args)))


@main.group()
def seccomp():
    """Inspect seccomp policies."""


@seccomp.command("show")
@click.argument("profile")
@click.option("--pfc", is_flag=True, help="libseccomp's pseudo-filter code instead of the summary.")
@click.option("--bpf", "bpf_file", type=click.Path(dir_okay=False, writable=True),
              help="Also write the compiled BPF program to this file.")
def seccomp_show(profile, pfc, bpf_file):
    """Print PROFILE's resolved seccomp policy."""
    from .api import load_profile
    from .errors import SandboxError
    from .seccomp import compile_bpf, describe, export_pfc
    try:
        policy = load_profile(profile).seccomp
    except SandboxError as exc:
        _fail(exc)
    if pfc and policy is not None:
        click.echo(export_pfc(policy), nl=False)
    else:
        click.echo(describe(policy))
    if bpf_file:
        if policy is None:
            raise click.UsageError("the profile has no seccomp filter to export")
        with open(bpf_file, "wb") as handle:
            handle.write(compile_bpf(policy))


def _write_or_print(text: str, output: str | None) -> None:
    if output:
        with open(output, "w") as handle:
            handle.write(text)
    else:
        click.echo(text, nl=False)


@main.command("import")
@click.argument("kind", type=click.Choice(["docker-seccomp"]))
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the profile here (default: stdout).")
@click.option("--base", default="untrusted", show_default=True, help="Profile the new one extends.")
def import_(kind, file, output, base):
    """Turn a Docker/OCI seccomp JSON profile into a sandbox profile."""
    import tomli_w
    from .seccomp import import_docker, policy_to_profile_toml
    skipped: list = []
    try:
        policy = import_docker(file, skipped=skipped)
    except (ValueError, KeyError, TypeError) as exc:
        raise click.UsageError(f"{file}: not a Docker seccomp profile: {exc}") from None
    document = {"name": os.path.splitext(os.path.basename(output or file))[0],
                "description": f"Imported from {os.path.basename(file)} (Docker seccomp)"}
    document.update(policy_to_profile_toml(policy, base=base))
    _write_or_print(tomli_w.dumps(document), output)
    for note in skipped:
        _warn(f"not imported: {note}")


@main.command()
@click.argument("profile")
@click.option("--format", "fmt", type=click.Choice(["docker-seccomp"]), required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write here (default: stdout).")
def export(profile, fmt, output):
    """Write PROFILE's policy in another tool's format."""
    from .api import load_profile
    from .errors import SandboxError
    from .seccomp import export_docker
    try:
        policy = load_profile(profile).seccomp
    except SandboxError as exc:
        _fail(exc)
    if policy is None:
        raise click.UsageError("the profile has no seccomp filter (policy = \"unconfined\")")
    warnings: list = []
    _write_or_print(json.dumps(export_docker(policy, warnings=warnings), indent=2) + "\n", output)
    for warning in warnings:
        _warn(warning)


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the learned profile here.")
@click.option("--base", default="untrusted", show_default=True, help="Profile to run under and extend.")
def learn(command, output, base):
    """Run COMMAND (trusted!) recording its system calls, and write a minimal allowlist profile.

    While learning every system call is let through: use it only on workloads you trust."""
    import tomli_w
    from .api import load_profile
    from .errors import SandboxError
    from .launcher import Launch
    from .seccomp import default_policy, policy_to_profile_toml
    from .seccomp.learn import minimal_policy
    command = [c for i, c in enumerate(command) if not (i == 0 and c == "--")]
    try:
        profile = load_profile(base)
        launch = Launch(profile, command, seccomp_mode="learn")
        from .program import startup_done
        startup_done()  # the workload may run for long: collect again from here (see program.py)
        result = launch.run()
    except SandboxError as exc:
        _fail(exc)
    recorded = {v.syscall for v in launch.recorded}
    policy = minimal_policy(profile.seccomp or default_policy(), launch.recorded,
                            name=f"learned from {os.path.basename(command[0])}")
    document = {"name": os.path.splitext(os.path.basename(output))[0] if output else "learned",
                "description": f"Learned from: {' '.join(command)[:80]}"}
    document.update(policy_to_profile_toml(policy, base=base))
    _write_or_print(tomli_w.dumps(document), output)
    click.echo(f"sandbox: learned {len(recorded)} system calls (workload exit {result.exit_code})", err=True)
    sys.exit(0 if result.exit_code == 0 else result.exit_code)


@main.command()
def gc():
    """Remove cgroups and network segments left behind by launchers that were killed."""
    from .cgroups import gc as collect
    from .net import gc as collect_network
    for path in collect():
        click.echo(f"removed {path}")
    for what in collect_network():
        click.echo(f"removed {what}")


@main.command()
def schema():
    """Print the JSON Schema of the profile format."""
    from .profile.schema import schema_text
    click.echo(schema_text(), nl=False)  # byte for byte sandbox/schema/profile.schema.json


if __name__ == "__main__":
    main()
