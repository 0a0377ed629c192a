"""Seconds from `miaofa up` to a green /healthz, on a fresh data dir and on a restart.

    .venv/bin/python -m benchmarks.up_time
"""

import signal
import subprocess
import sys
import tempfile
import time

import httpx


def one_start(cwd: str) -> float:
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "miaofa.cli", "up"], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                if httpx.get("http://127.0.0.1:8000/healthz", timeout=1).status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise RuntimeError("miaofa up exited")
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


def main() -> None:
    with tempfile.TemporaryDirectory() as cwd:
        print(f"fresh data dir: healthy in {one_start(cwd):.1f} s")
        for run in (1, 2):
            print(f"restart {run}: healthy in {one_start(cwd):.1f} s")


if __name__ == "__main__":
    main()
