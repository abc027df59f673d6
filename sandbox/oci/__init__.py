"""sandbox-runtime: an OCI runtime with runc's command line, on the sandbox launcher.

    spec.py     config.json -> a checked Bundle holding a LaunchPlan (errors name the field)
    policy.py   where a translated plan is checked against a policy before create (the floor)
    state.py    a container's state under --root, and its status as runc derives it
    commands.py create, start, kill, delete, exec, ... (the lifecycle across processes)
    cli.py      the command line (kept lean: each command imports only what it needs)

See docs/oci.md.
"""
