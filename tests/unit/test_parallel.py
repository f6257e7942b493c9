"""deepface.parallel: the CPUs a container may use (cgroup quotas, on fake cgroup folders), and the
ordered pool: order, prompt stop on an exception, SIGTERM (in a child interpreter)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deepface import parallel
from deepface.parallel import Terminated, available_cpus, cgroup_cpu_limit, ordered_map

NODE_CPUS = 64  # the affinity count of a large node, where a task is limited to a few CPUs by its cgroup


@pytest.fixture
def node(monkeypatch):
    """This process runs on a 64-core node (its affinity mask), whatever this machine has."""
    monkeypatch.setattr(parallel, "_affinity_cpus", lambda: NODE_CPUS)


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def membership(tmp_path: Path, text: str = "0::/\n") -> Path:
    """A fake /proc/self/cgroup."""
    return write(tmp_path, {"proc_self_cgroup": text}) / "proc_self_cgroup"


# --------------------------------------------------------------------------------------------------
# CPUs


def test_cgroup_v2_quota_limits_the_cpus(node, tmp_path):
    root = write(tmp_path / "cgroup", {"cgroup.controllers": "cpu io memory\n", "cpu.max": "800000 100000\n"})
    assert cgroup_cpu_limit(root, membership(tmp_path)) == 8.0
    assert available_cpus(root, membership(tmp_path)) == 8


@pytest.mark.parametrize(("quota", "cpus"), [("250000 100000", 3), ("50000 100000", 1), ("100000 100000", 1)])
def test_a_fractional_quota_rounds_up_to_at_least_one(node, tmp_path, quota, cpus):
    root = write(tmp_path / "cgroup", {"cgroup.controllers": "cpu\n", "cpu.max": quota + "\n"})
    assert available_cpus(root, membership(tmp_path)) == cpus


def test_cgroup_v2_max_means_no_limit(node, tmp_path):
    root = write(tmp_path / "cgroup", {"cgroup.controllers": "cpu\n", "cpu.max": "max 100000\n"})
    assert cgroup_cpu_limit(root, membership(tmp_path)) is None
    assert available_cpus(root, membership(tmp_path)) == NODE_CPUS


def test_cgroup_v1_quota_limits_the_cpus(node, tmp_path):
    root = write(tmp_path / "cgroup", {"cpu,cpuacct/cpu.cfs_quota_us": "400000\n",
                                       "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
                                       "memory/memory.limit_in_bytes": "1"})
    proc = membership(tmp_path, "5:memory:/\n4:cpu,cpuacct:/\n")
    assert cgroup_cpu_limit(root, proc) == 4.0
    assert available_cpus(root, proc) == 4


def test_cgroup_v1_without_quota(node, tmp_path):
    root = write(tmp_path / "cgroup", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"})
    assert available_cpus(root, membership(tmp_path, "3:cpu:/\n")) == NODE_CPUS


def test_no_cgroups_at_all(node, tmp_path):
    (tmp_path / "empty").mkdir()
    assert cgroup_cpu_limit(tmp_path / "empty", tmp_path / "missing") is None
    assert cgroup_cpu_limit(tmp_path / "missing", tmp_path / "missing") is None
    assert available_cpus(tmp_path / "missing", tmp_path / "missing") == NODE_CPUS


def test_a_quota_above_the_affinity_count_changes_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr(parallel, "_affinity_cpus", lambda: 4)
    root = write(tmp_path / "cgroup", {"cgroup.controllers": "cpu\n", "cpu.max": "3200000 100000\n"})
    assert available_cpus(root, membership(tmp_path)) == 4


def test_a_limit_on_the_process_cgroup_or_an_ancestor_applies(node, tmp_path):
    """Without a cgroup namespace, /sys/fs/cgroup is the whole hierarchy: the process's own folder (from
    /proc/self/cgroup) and its ancestors count, the smallest quota wins; folders not visible are skipped."""
    root = write(tmp_path / "cgroup", {"cgroup.controllers": "cpu\n",
                                       "kubepods/cpu.max": "max 100000\n",
                                       "kubepods/pod1/cpu.max": "600000 100000\n",
                                       "kubepods/pod1/task/cpu.max": "1200000 100000\n"})
    assert available_cpus(root, membership(tmp_path, "0::/kubepods/pod1/task\n")) == 6
    assert available_cpus(root, membership(tmp_path, "0::/elsewhere/not/mounted\n")) == NODE_CPUS
    v1 = write(tmp_path / "v1", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n",
                                 "cpu/docker/c1/cpu.cfs_quota_us": "200000\n",
                                 "cpu/docker/c1/cpu.cfs_period_us": "100000\n"})
    assert available_cpus(v1, membership(tmp_path, "4:cpu,cpuacct:/docker/c1\n")) == 2


def test_unreadable_or_malformed_files_are_no_limit(node, tmp_path):
    root = write(tmp_path / "cgroup", {"cgroup.controllers": "cpu\n", "cpu.max": "lots\n"})
    assert available_cpus(root, membership(tmp_path)) == NODE_CPUS
    root = write(tmp_path / "zero", {"cgroup.controllers": "cpu\n", "cpu.max": "100000 0\n"})
    assert available_cpus(root, membership(tmp_path)) == NODE_CPUS


def test_this_machine():
    assert 1 <= available_cpus() <= len(parallel.os.sched_getaffinity(0))


# --------------------------------------------------------------------------------------------------
# The pool


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_results_come_in_input_order(workers):
    with ordered_map(workers) as run:
        assert list(run(abs, range(0, -40, -1))) == list(range(40))


def test_an_exception_stops_busy_pool_processes_at_once():
    """Leaving the block by an exception does not wait for the tasks running in the pool (ten minutes
    of sleep each here): the pool processes are stopped."""
    def arguments():
        yield from [600, 600]  # both go to the pool process (one runs, one waits)
        raise RuntimeError("the stage failed")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="the stage failed"), ordered_map(2) as run:
        for _ in run(time.sleep, arguments()):
            pass
    assert time.monotonic() - started < 60


def test_the_sigterm_handler_is_installed_only_over_the_default_one():
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with ordered_map(1):
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL

        def own(signum, frame):
            pass

        signal.signal(signal.SIGTERM, own)
        with ordered_map(1):
            assert signal.getsignal(signal.SIGTERM) is own  # the caller's own handler is left alone
        assert signal.getsignal(signal.SIGTERM) is own
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_terminated_is_a_system_exit_with_status_143():
    assert issubclass(Terminated, SystemExit) and not issubclass(Terminated, Exception)
    assert Terminated().code == 143


BUSY_POOL = """
import logging, sys, time
from deepface.parallel import ordered_map
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
if __name__ == "__main__":
    try:
        with ordered_map(3) as run:  # two pool processes with two tasks each, then one task here
            for _ in run(time.sleep, [600] * 10):
                pass
    finally:
        print("cleanup ran", flush=True)
"""


def test_sigterm_stops_busy_pool_processes_and_exits_143(tmp_path):
    """In a child interpreter: every process sleeping in a ten-minute task, SIGTERM to the main one."""
    from helpers.faults import DEADLINE_SECONDS, POLL_SECONDS, descendants, group_members

    script = tmp_path / "busy_pool.py"
    script.write_text(BUSY_POOL)
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True, text=True)
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while len(descendants(child.pid)) < 4:  # two pool processes, the forkserver, the resource tracker
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(POLL_SECONDS)
        started = time.monotonic()
        child.send_signal(signal.SIGTERM)
        output, _ = child.communicate(timeout=60)  # its output pipe closes once every process holding it ended
        while group_members(child.pid):  # the forkserver and resource tracker end once the main process did
            assert time.monotonic() - started < 30
            time.sleep(POLL_SECONDS)
        seconds = time.monotonic() - started
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)  # whatever is left (nothing, when the pool behaves)
        child.wait()
    assert child.returncode == 143, output
    assert "WARNING deepface.parallel: Stopped by SIGTERM" in output and "cleanup ran" in output
    assert "Traceback" not in output
    assert seconds < 30  # Kubernetes' default grace period: all ended before SIGKILL would have come
