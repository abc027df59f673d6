"""sandbox-runtime: an OCI runtime with runc's command line, on the sandbox launcher.

    spec.py     config.json -> a checked Bundle holding a LaunchPlan (errors name the field)
    floor.py    the runtime floor: model, loader, "stricter" (docs/oci.md, "The floor")
    policy.py   config.json judged against the floor before create; the plan raised to it
    idranges.py host id ranges per container (allocated, recorded, released, reclaimed)
    idmap.py    idmapped root (an overlay rebuilt from idmapped layers) and binds
    verify.py   the probe inside the container at start
    state.py    a container's state under --root, and its status as runc derives it
    commands.py create, start, kill, delete, exec, ... (the lifecycle across processes)
    cli.py      the command line (kept lean: each command imports only what it needs)

See docs/oci.md.
"""
