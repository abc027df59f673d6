"""Every `sandbox` command but `run`, made only when the command line asks for one of them.

cli.py's group looks them up here by name (cli.LAZY_COMMANDS): `sandbox run`, the launch path,
neither imports this module nor builds its ~40 click commands and their options (~25 M
instructions of a cold start, docs/performance.md). Click's documented pattern for large CLIs.
"""
from __future__ import annotations

import json
import os
import sys

import click

from .cli import _fail, _load, _warn, run_options  # one wording of errors, one set of run options
from .cli_run import EXIT_USAGE

@click.command()
@click.argument("profile")
@run_options
def check(profile, options):
    """Validate PROFILE (with the run options given) and print it fully resolved, as TOML."""
    from .profile.dump import to_toml
    click.echo(to_toml(_load(profile, options)), nl=False)


@click.command()
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


@click.command()
@click.argument("profile")
@run_options
@click.option("--json", "as_json", is_flag=True, help="Findings as JSON (with --score: an object with the score).")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too, not only on dangers.")
@click.option("--score", "show_score", is_flag=True, help="Also give the exposure score, 0 (locked down) to 10.")
@click.option("--max-score", type=click.FloatRange(0, 10), metavar="N",
              help="Exit 1 when the exposure score is above N (a CI gate; implies --score).")
def lint(profile, options, as_json, strict, show_score, max_score):
    """Report every relaxation of the secure defaults in PROFILE (with the run options given), and
    risky choices.

    Each finding has a stable id (docs/lint.md). Exit 1 on a danger (--strict: on a warning too)
    or a score above --max-score, else 0."""
    from .lint import level, lint as lint_profile, score
    loaded = _load(profile, options)
    findings = lint_profile(loaded)
    show_score = show_score or max_score is not None
    exposure = score(findings)
    over = max_score is not None and exposure > max_score
    if as_json:
        listed = [f.to_dict() for f in findings]
        click.echo(json.dumps({"profile": loaded.name, "score": exposure, "level": level(exposure),
                               "max_score": max_score, "findings": listed} if show_score else listed, indent=2))
    else:
        for finding in findings:
            click.echo(str(finding))
        counts = {s: sum(f.severity == s for f in findings) for s in ("danger", "warning", "info")}
        click.echo(f"{loaded.name}: {counts['danger']} danger, {counts['warning']} warnings, {counts['info']} info")
        if show_score:
            gate = "" if max_score is None else f" ({'above' if over else 'within'} --max-score {max_score:g})"
            click.echo(f"{loaded.name}: exposure score {exposure:.1f}/10 ({level(exposure)}){gate}")
    failing = {"danger", "warning"} if strict else {"danger"}
    sys.exit(1 if over or any(f.severity in failing for f in findings) else 0)


_LOG_OPTION = click.option("--log", "log_file", type=click.Path(dir_okay=False),
                           help="Audit log to read (default: this user's, or $SANDBOX_AUDIT_LOG).")


@click.group(invoke_without_command=True)
@_LOG_OPTION
@click.option("-n", "--tail", default=20, show_default=True, help="How many launches to show (0: all).")
@click.option("--since", metavar="DURATION|TIME", help="Only launches since then: 1h, 30m, 2d, or 2025-01-31T12:00.")
@click.option("--profile", "profile_name", metavar="NAME", help="Only launches of this profile.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a launch: its start record and its end.")
@click.pass_context
def audit(ctx, log_file, tail, since, profile_name, as_json):
    """Show the audit trail of recent launches; `sandbox audit verify` checks its hash chain."""
    if ctx.invoked_subcommand is not None:
        return
    from .audit import launches, log_path
    path = log_file or log_path()
    cutoff = _since(since) if since else None
    try:
        shown = launches(path, tail=tail, since=cutoff, profile=profile_name)
    except FileNotFoundError:
        click.echo(f"sandbox: no audit log at {path} yet", err=True)
        sys.exit(0)
    for start, end in shown:
        if as_json:
            click.echo(json.dumps({**start, "end": end or {}}))
            continue
        outcome = ("running or killed" if not end else f"error: {end['error']}" if "error" in end
                   else f"exit {end.get('exit_code')}")
        click.echo(f"{start.get('time')}  {start.get('user')}  {start.get('profile')}  "
                   f"{' '.join(start.get('argv', []))[:60]}  -> {outcome}"
                   + (f"  [{len(start.get('relaxations', []))} relaxations]" if start.get("relaxations") else ""))


def _since(text: str) -> float:
    """An epoch time from '1h' (ago) or an ISO 8601 time (UTC unless it says otherwise)."""
    from datetime import datetime, timezone
    from .profile.units import parse_duration
    import time as _time
    try:
        return _time.time() - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"expected a duration (1h, 30m) or an ISO 8601 time, found {text!r}",
                                 param_hint="--since") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


@audit.command("verify")
@_LOG_OPTION
@click.option("--json", "as_json", is_flag=True, help="The outcome as JSON.")
def audit_verify(log_file, as_json):
    """Check the audit log's hash chain (and its rotated files).

    Exit 0 when intact; 1 naming the first record changed, removed or reordered."""
    from .audit import log_path, verify
    path = log_file or log_path()
    if not os.path.exists(path) and not os.path.exists(path + ".1"):
        _fail_text(f"no audit log at {path}")
    outcome = verify(path)
    if as_json:
        click.echo(json.dumps({"log": path, **outcome.to_dict()}, indent=2))
    elif outcome.ok:
        click.echo(f"{path}: {outcome.summary()}")
        for note in outcome.notes:
            click.echo(f"  note: {note}")
    else:
        click.echo(f"sandbox: {path}: broken chain: {outcome.problem}", err=True)
    sys.exit(0 if outcome.ok else 1)


def _fail_text(message: str) -> None:
    click.echo(f"sandbox: {message}", err=True)
    sys.exit(EXIT_USAGE)


@click.command()
@click.argument("profile")
@run_options
@click.option("--json", "as_json", is_flag=True, help="The full results as JSON.")
@click.option("--stress", is_flag=True, help="Also allocate and fork past the limits (in the sandbox).")
@click.option("--against", metavar="PROFILE", help="Judge by another profile's promises (e.g. untrusted).")
def verify(profile, options, as_json, stress, against):
    """Launch PROFILE (with the run options given) with a probe and check, one by one, that its
    isolation holds.

    Exit 0 when every expectation holds, 1 when any fails, 125 when it could not run."""
    from .api import load_profile
    from .errors import SandboxError
    from .verify import verify_profile
    from .verify.report import use_colour
    loaded = _load(profile, options)
    try:
        outcome = verify_profile(loaded, stress=stress, against=load_profile(against) if against else None)
    except SandboxError as exc:
        _fail(exc)
    for warning in outcome.warnings:
        if not as_json:
            _warn(warning)
    click.echo(outcome.to_json() if as_json else outcome.render(colour=use_colour(sys.stdout)))
    sys.exit(0 if outcome.ok else 1)


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("probe_args", nargs=-1, type=click.UNPROCESSED)
def probe(probe_args):
    """Probe the isolation of wherever this runs, with no profile (see sandbox/verify/probe.py).

    Options: --json, --context FILE|JSON, --stress, --outside PID."""
    from .verify.probe import main as probe_main
    sys.exit(probe_main(list(probe_args)))


@click.group()
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


@click.command("import")
@click.argument("kind", type=click.Choice(["docker-seccomp", "oci"]))
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the profile here (default: stdout).")
@click.option("--base", default="untrusted", show_default=True, help="docker-seccomp: the profile the new one extends (an oci import stands alone).")
def import_(kind, file, output, base):
    """Turn a Docker/OCI seccomp JSON profile (docker-seccomp), or an OCI bundle's config.json (oci),
    into a sandbox profile. What a profile cannot express is listed as warnings on stderr."""
    if kind == "oci":
        from .export.cli import import_oci_command
        import_oci_command(file, output)
        return
    import tomli_w
    from .lint import seccomp_findings
    from .seccomp import import_docker, policy_to_profile_toml
    reasons: dict = {}
    try:
        policy = import_docker(file, reasons=reasons)
    except (ValueError, KeyError, TypeError) as exc:
        raise click.UsageError(f"{file}: not a Docker seccomp profile: {exc}") from None
    except json.JSONDecodeError as exc:
        raise click.UsageError(f"{file}: not a Docker seccomp profile: invalid JSON: {exc}") from None
    document = {"name": os.path.splitext(os.path.basename(output or file))[0],
                "description": f"Imported from {os.path.basename(file)} (Docker seccomp)"}
    document.update(policy_to_profile_toml(policy, base=base))
    _write_or_print(tomli_w.dumps(document), output)
    by_reason: dict = {}
    for name, why in reasons.items():
        by_reason.setdefault(why, []).append(name)
    for why, names in by_reason.items():
        _warn(f"not imported: {', '.join(names)}: {why}")
    _print_widenings(seccomp_findings(policy))


def _print_widenings(findings) -> None:
    """What `sandbox lint` says about a policy's widenings, on stderr (stdout may hold the profile)."""
    from .cli_run import echo
    if not findings:
        echo("sandbox: the policy allows nothing the default policy denies")
        return
    counts = {s: sum(f.severity == s for f in findings) for s in ("danger", "warning")}
    echo(f"sandbox: the policy allows more than the default policy ({counts['danger']} danger, "
         f"{counts['warning']} warnings; `sandbox lint` reports the same):")
    for finding in findings:
        echo(f"sandbox:   {finding}")


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("profile")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--format", "fmt", type=click.Choice(["docker-seccomp", "oci", "kubernetes", "systemd"]),
              required=True, help="docker-seccomp: the policy as JSON; oci: a bundle (config.json, rootfs/); "
              "kubernetes: Pod, NetworkPolicy, RuntimeClass and seccomp JSON; systemd: a .service unit.")
@click.option("-o", "--output", type=click.Path(), help="A file (docker-seccomp; default stdout) or a new "
              "directory (the other formats).")
@click.option("--rootless", is_flag=True, help="oci, systemd: for a runtime run by an unprivileged user "
              "(maps its uid, as `runc spec --rootless`).")
@click.option("--compat", type=click.Choice(["runc-1.1"]), help="oci: leave out what this runtime refuses.")
@click.option("--image", metavar="IMAGE", help="kubernetes: the container image.")
def export(profile, command, fmt, output, rootless, compat, image):
    """Write PROFILE in another tool's format (COMMAND after `--` replaces the profile's).

    What the target cannot express is listed as warnings on stderr (docs/oci.md)."""
    if fmt != "docker-seccomp":
        from .export.cli import export_command
        export_command(profile, list(command), fmt, output, rootless=rootless, compat=compat, image=image)
        return
    if command or rootless or compat or image:
        raise click.UsageError("--format docker-seccomp writes the policy alone: no command, --rootless, "
                               "--compat or --image")
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


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the learned profile here.")
@click.option("--base", default="untrusted", show_default=True, help="Profile to run under and extend.")
@click.option("--baseline", "baseline_file", type=click.Path(dir_okay=False),
              help="Write the run's baseline (executables, network destinations) here; default with -o: "
                   "beside the profile, NAME.baseline.json, which the profile's [monitor] baseline names.")
def learn(command, output, base, baseline_file):
    """Run COMMAND (trusted!) recording its system calls, the files it executes and the network
    destinations it uses, and write a profile allowing just those: a minimal seccomp allowlist, an
    [exec] allow list, and a baseline for [monitor] (anomalies are what later runs do beyond it).

    While learning every system call is let through (and the base's exec list is lifted): use it
    only on workloads you trust."""
    import tomli_w
    from .api import load_profile
    from .errors import SandboxError
    from .launcher import Launch
    from .seccomp import default_policy, policy_to_profile_toml
    from .profile.model import Exec
    from .seccomp.learn import minimal_policy, proposed_exec_list
    command = [c for i, c in enumerate(command) if not (i == 0 and c == "--")]
    try:
        profile = load_profile(base)
        launch = Launch(profile.replace(exec=Exec()), command, seccomp_mode="learn")
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
    executed = proposed_exec_list(launch.recorded)
    document["exec"] = {"allow": executed}
    from .monitor.baseline import dumps
    from .seccomp.learn import proposed_baseline
    baseline = proposed_baseline(launch.recorded, command)
    if baseline_file is None and output:
        baseline_file = os.path.splitext(output)[0] + ".baseline.json"
    if baseline_file:
        with open(baseline_file, "w") as handle:
            handle.write(dumps(baseline))
        document["monitor"] = {"baseline": os.path.abspath(baseline_file)}
    _write_or_print(tomli_w.dumps(document), output)
    click.echo(f"sandbox: learned {len(recorded)} system calls, {len(executed)} executables and "
               f"{len(baseline['network'])} network destinations (workload exit {result.exit_code})", err=True)
    sys.exit(0 if result.exit_code == 0 else result.exit_code)


@click.command()
def gc():
    """Remove cgroups, network segments and `sandbox ps` records left behind by launchers that were killed."""
    from .cgroups import gc as collect
    from .net import gc as collect_network
    from .registry import collect as collect_records
    removed = collect() + list(collect_network()) + collect_records()
    for path in removed:
        click.echo(f"removed {path}")
    if not removed:
        click.echo("nothing to collect: no cgroup, network segment or record of a dead launcher is left")


# ---------------------------------------------------------------- running sandboxes (docs/monitoring.md)

def _running(prefix: str):
    from .registry import RecordError, find
    try:
        return find(prefix)
    except RecordError as exc:
        _fail_text(str(exc))


@click.command()
@click.option("--json", "as_json", is_flag=True, help="As JSON, with every figure.")
@click.option("-q", "--quiet", is_flag=True, help="Only the ids.")
def ps(as_json, quiet):
    """List the running sandboxes of this user (root: of every user): id, profile, user, init's
    pid, uptime, cpu, memory and processes, from each sandbox's cgroup."""
    from .monitor.report import entry, ps_table
    from .registry import sandboxes
    rows = [(running, running.figures()) for running in sandboxes()]
    if as_json:
        click.echo(json.dumps([entry(r, f) for r, f in rows], indent=2))
    elif quiet:
        for running, _figures in rows:
            click.echo(running.id)
    else:
        click.echo(ps_table(rows))


@click.command()
@click.argument("ids", nargs=-1, required=True)
@click.option("-t", "--grace", metavar="DURATION",
              help="Between SIGTERM and SIGKILL (default: the sandbox's limits.kill_after).")
def stop(ids, grace):
    """Stop running sandboxes: SIGTERM to the workload and every process, then SIGKILL to the whole
    tree after the grace period. Ids may be abbreviated."""
    from .profile.units import parse_duration
    from .registry import RecordError, stop as stop_sandbox
    seconds = None
    if grace is not None:
        try:
            seconds = parse_duration(grace)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--grace") from None
    targets = [_running(prefix) for prefix in ids]
    for running in targets:
        try:
            outcome = stop_sandbox(running, seconds)
        except RecordError as exc:
            _fail_text(str(exc))
        click.echo(f"{running.id}: {outcome}")


@click.command()
@click.argument("sandbox_id", metavar="ID")
@click.argument("signal_name", metavar="[SIGNAL]", required=False, default="KILL")
def kill(sandbox_id, signal_name):
    """Send SIGNAL (default KILL) to a running sandbox: KILL ends every process in it, any other
    signal goes to the workload (through its init)."""
    import signal as signals
    from .registry import RecordError, kill as kill_sandbox
    name = signal_name.upper()
    try:
        signum = int(name) if name.isdigit() else signals.Signals[name if name.startswith("SIG") else "SIG" + name]
        signum = signals.Signals(signum)
    except (KeyError, ValueError):
        raise click.BadParameter(f"not a signal name or number: {signal_name}", param_hint="SIGNAL") from None
    running = _running(sandbox_id)
    try:
        kill_sandbox(running, signum)
    except RecordError as exc:
        _fail_text(str(exc))
    click.echo(f"{running.id}: {signum.name}")


@click.command()
@click.argument("ids", nargs=-1)
@click.option("--prometheus", is_flag=True, help="The Prometheus text exposition format (metrics sandbox_*).")
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write to FILE atomically (for node exporter's textfile collector: a *.prom file).")
def stats(ids, prometheus, as_json, output):
    """Resource figures of the running sandboxes (or of IDS): cpu, memory, processes, I/O, OOM kills."""
    from .monitor.report import entry, prometheus as exposition, stats_table, write_atomically
    from .registry import sandboxes
    if prometheus and as_json:
        raise click.UsageError("--prometheus and --json: choose one")
    chosen = [_running(prefix) for prefix in ids] if ids else sandboxes()
    rows = [(running, running.figures()) for running in chosen]
    if prometheus:
        text = exposition(rows)
    elif as_json:
        text = json.dumps([entry(r, f) for r, f in rows], indent=2) + "\n"
    else:
        text = stats_table(rows) + "\n"
    if output:
        write_atomically(output, text)
    else:
        click.echo(text, nl=False)


@click.command()
@click.argument("sandbox_id", metavar="ID")
@click.option("-f", "--follow", is_flag=True, help="Keep printing events until the sandbox ends.")
@click.option("--kind", "kinds", metavar="KIND[,KIND...]", help="Only these kinds (exec,connect,anomaly,...).")
def events(sandbox_id, follow, kinds):
    """Print a running sandbox's live activity events (JSON lines; it must have been started with
    --events or [monitor] events/baseline)."""
    from .monitor.follow import follow_events
    running = _running(sandbox_id)
    path = running.events_file()
    if path is None:
        _fail_text(f"sandbox {running.id[:12]} has no events to read (start it with --events, or set "
                   "[monitor] events or baseline)")
    wanted = {k.strip() for k in kinds.split(",") if k.strip()} if kinds else None
    sys.exit(follow_events(running, path, follow=follow, kinds=wanted))


# ---------------------------------------------------------------- images (docs/images.md)

@click.group()
def image():
    """Container images: pull into the store, list, inspect, remove."""


def _store():
    from .image import Store
    return Store()


@image.command("pull")
@click.argument("ref")
@click.option("--digest", metavar="sha256:...", default="", help="Refuse any other image.")
@click.option("--profile", "profile_name", metavar="PROFILE",
              help="Apply this profile's [image] policy (allowed_registries, tls_verify).")
@click.option("--tls-verify/--no-tls-verify", default=True, help="Require HTTPS with a verified certificate.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the image's digest.")
def image_pull(ref, digest, profile_name, tls_verify, quiet):
    """Pull REF into the store, verifying every blob; print its digest."""
    from .errors import SandboxError
    from .image import ReferenceError, parse
    try:
        parsed = parse(ref)
    except ReferenceError as exc:
        raise click.BadParameter(str(exc), param_hint="REF") from None
    allowed = None
    try:
        if profile_name:
            from .api import load_profile
            # Its policy only: with ref blanked, loading it pulls nothing.
            settings = load_profile(profile_name, overrides={"image": {"ref": ""}}).image
            allowed, tls_verify = settings.allowed_registries, settings.tls_verify
        found = _store().pull(parsed, pin=digest, allowed=allowed, tls_verify=tls_verify, policy="always",
                              log=None if quiet else lambda message: click.echo(f"sandbox: {message}", err=True))
    except SandboxError as exc:
        _fail(exc)
    click.echo(found.id)


@image.command("ls")
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
def image_ls(as_json):
    """List the images in the store."""
    from .profile.units import format_size
    images = _store().images()
    if as_json:
        click.echo(json.dumps([_image_dict(i) for i in images], indent=2))
        return
    for found in images:
        names = ", ".join(found.references) or "(no reference)"
        click.echo(f"{found.id[7:19]}  {format_size(found.size):>7}  {found.created[:10] or '?':<10}  {names}")


def _image_dict(found) -> dict:
    return {"id": found.id, "config": found.config_digest, "index": found.index_digest, "layers": list(found.layers),
            "references": list(found.references), "created": found.created, "pulled": found.pulled,
            "size": found.size, "path": found.path}


@image.command("inspect")
@click.argument("name")
def image_inspect(name):
    """Print what the store knows of an image (by digest, prefix or reference), as JSON."""
    from .errors import SandboxError
    try:
        found = _store().get(name)
        data = _image_dict(found)
        data["config_json"] = found.config()
    except SandboxError as exc:
        _fail(exc)
    click.echo(json.dumps(data, indent=2))


@image.command("rm")
@click.argument("names", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Remove even an image a running sandbox uses.")
def image_rm(names, force):
    """Remove images (their layers go at the next prune)."""
    from .errors import SandboxError
    try:
        for name in names:
            click.echo(f"removed {_store().remove(name, force=force).id}")
    except SandboxError as exc:
        _fail(exc)


@image.command("prune")
@click.option("--all", "all_images", is_flag=True, help="Also images that a reference still names.")
def image_prune(all_images):
    """Remove unreferenced images, unused layers and leftovers of interrupted pulls."""
    from .errors import SandboxError
    try:
        for item in _store().prune(all_images=all_images):
            click.echo(f"removed {item}")
    except SandboxError as exc:
        _fail(exc)


# ---------------------------------------------------------------- scanning (docs/images.md)

@click.command()
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Findings as JSON.")
@click.option("--sarif", is_flag=True, help="Findings as SARIF 2.1.0 (for code-scanning dashboards).")
@click.option("--fail-on", type=click.Choice(["low", "medium", "high", "critical"]),
              help="Exit 1 when a finding at or above this severity remains.")
@click.option("--allow", "allow_file", type=click.Path(dir_okay=False), help="Allowlist of accepted findings.")
@click.option("--sbom", "sbom_file", type=click.Path(dir_okay=False), help="Write a CycloneDX SBOM here.")
@click.option("--vuln-db", type=click.Path(file_okay=False), help="OSV database directory to match the SBOM against.")
def scan(target, as_json, sarif, fail_on, allow_file, sbom_file, vuln_db):
    """Scan an image (REF, or a digest in the store), a directory, or what a PROFILE's sandbox sees.

    Files (setuid, capabilities, world-writable, devices, unknown owners, symlinks leaving the tree),
    credentials, image configuration, installed software and its known vulnerabilities."""
    from .errors import SandboxError
    from .scan import run_scan
    if as_json and sarif:
        raise click.UsageError("--json and --sarif: choose one")
    try:
        report = run_scan(target, allowlist=allow_file, vuln_db=vuln_db)
    except SandboxError as exc:
        _fail(exc)
    if sbom_file:
        with open(sbom_file, "w") as handle:
            handle.write(report.sbom_json())
    click.echo(report.to_json() if as_json else report.to_sarif() if sarif else report.render())
    sys.exit(1 if fail_on and report.failing(fail_on) else 0)


@click.command()
def schema():
    """Print the JSON Schema of the profile format."""
    from .profile.schema import schema_text
    click.echo(schema_text(), nl=False)  # byte for byte sandbox/schema/profile.schema.json
