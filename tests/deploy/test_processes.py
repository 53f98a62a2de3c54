import os
import subprocess
import sys
import time
import uuid

from fedsynth.deploy.processes import is_running, running_with_env, stop_all_with_env

# A process in a session of its own (as Flower starts its SuperExec), one that ignores SIGTERM.
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(600)"
)
POLITE = "import time; print('up', flush=True); time.sleep(600)"


def _start(code: str, marker: str) -> subprocess.Popen[str]:
    env = {**os.environ, "FEDSYNTH_TEST_MARK": marker}
    process = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert process.stdout is not None and process.stdout.readline() == "up\n"
    return process


def test_stop_all_with_env_stops_detached_processes_and_says_which_needed_sigkill() -> None:
    marker = uuid.uuid4().hex
    polite, stubborn = _start(POLITE, marker), _start(STUBBORN, marker)
    other = _start(POLITE, uuid.uuid4().hex)
    try:
        assert sorted(running_with_env("FEDSYNTH_TEST_MARK", marker)) == sorted([polite.pid, stubborn.pid])
        started = time.monotonic()
        killed = stop_all_with_env("FEDSYNTH_TEST_MARK", marker, grace=1.0)
        assert killed == [stubborn.pid] and time.monotonic() - started < 20
        polite.wait(5), stubborn.wait(5)
        assert running_with_env("FEDSYNTH_TEST_MARK", marker) == []
        assert is_running(other.pid)  # a process with another value is left alone
    finally:
        for process in (polite, stubborn, other):
            process.kill()
            process.wait()


def test_stop_all_with_env_returns_at_once_when_nothing_runs() -> None:
    assert stop_all_with_env("FEDSYNTH_TEST_MARK", uuid.uuid4().hex) == []
