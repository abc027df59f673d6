"""CI systems call the API from many threads at once: every launch must stay separate."""
from __future__ import annotations

import threading

from conftest import require

import sandbox


def test_concurrent_launches_from_threads_do_not_mix_up_their_files_or_output():
    require("userns", "system_python")
    profile = sandbox.load_profile("untrusted")
    failures: list[str] = []

    def work(worker: int) -> None:
        for round_ in range(5):
            expected = f"{worker}-{round_}"
            try:
                result = sandbox.run(profile, ["/bin/sh", "-c", f"echo {expected}; echo err-{expected} >&2"],
                                     capture_output=True, timeout=30)
            except Exception as exc:  # noqa: BLE001 - collected and reported below
                failures.append(f"{expected}: {exc!r}")
                continue
            if (result.exit_code, result.stdout, result.stderr) != (0, f"{expected}\n".encode(),
                                                                    f"err-{expected}\n".encode()):
                failures.append(f"{expected}: {result.exit_code} {result.stdout!r} {result.stderr!r}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
