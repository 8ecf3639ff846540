"""The limits a runner runs under: its own cgroup (v2 or v1, as root) for memory and, where the pids
controller is there, processes and threads; else an address-space rlimit.

A cgroup counts what the process really holds (resident memory and page cache), so a model that asks for more
is killed by the kernel's OOM killer inside its cgroup alone, and the pool tells its callers why. Without a
writable cgroup (not root, or no memory controller) RLIMIT_AS is the fallback, set by
`marketplace/sandbox/confine.py`: allocations past it fail in the runtime."""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

CGROUP_V2 = Path("/sys/fs/cgroup")
CGROUP_V1 = Path("/sys/fs/cgroup/memory")
CGROUP_V1_PIDS = Path("/sys/fs/cgroup/pids")
# Processes and threads one runner may have: a runtime's thread pools need a few dozen; a fork bomb
# stops here.
PIDS_MAX = 512


class MemoryCgroup:
    """One runner's memory cgroup: `attach(pid)` after start; `oom_kills()` tells OOM kills from crashes."""

    def __init__(self, path: Path, version: int, limit_bytes: int):
        self.path, self.version = path, version
        self.pids_path: Path | None = None  # cgroup v1: the pids hierarchy is a tree of its own
        path.mkdir(parents=True, exist_ok=True)
        if version == 2:
            (path / "memory.max").write_text(str(limit_bytes))
            if (path / "pids.max").exists():
                (path / "pids.max").write_text(str(PIDS_MAX))
            if (path / "memory.swap.max").exists():
                (path / "memory.swap.max").write_text("0")
        else:
            (path / "memory.limit_in_bytes").write_text(str(limit_bytes))
            swap = path / "memory.memsw.limit_in_bytes"
            if swap.exists():
                try:
                    swap.write_text(str(limit_bytes))
                except OSError:
                    pass
            if (CGROUP_V1_PIDS / "pids.max").exists() or (CGROUP_V1_PIDS / "cgroup.procs").exists():
                try:
                    pids = CGROUP_V1_PIDS / "modelport" / path.name
                    pids.mkdir(parents=True, exist_ok=True)
                    (pids / "pids.max").write_text(str(PIDS_MAX))
                    self.pids_path = pids
                except OSError as exc:
                    logger.warning("no pids cgroup for runners (%s)", exc)

    @classmethod
    def create(cls, name: str, limit_bytes: int) -> MemoryCgroup | None:
        if os.geteuid() != 0:
            return None
        try:
            controllers = (CGROUP_V2 / "cgroup.controllers").read_text().split()
        except OSError:
            controllers = []
        try:
            if "memory" in controllers:
                parent = CGROUP_V2 / "modelport"
                parent.mkdir(exist_ok=True)
                subtree = parent / "cgroup.subtree_control"
                enabled = subtree.read_text().split()
                for controller in ("memory", "pids"):
                    if controller in controllers and controller not in enabled:
                        subtree.write_text(f"+{controller}")
                return cls(parent / name, 2, limit_bytes)
            if (CGROUP_V1 / "memory.limit_in_bytes").exists():
                return cls(CGROUP_V1 / "modelport" / name, 1, limit_bytes)
        except OSError as exc:
            logger.warning("no memory cgroup for runners (%s): using an address-space limit", exc)
        return None

    def attach(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))
        if self.pids_path is not None:
            (self.pids_path / "cgroup.procs").write_text(str(pid))

    def oom_kills(self) -> int:
        try:
            if self.version == 2:
                text = (self.path / "memory.events").read_text()
                key = "oom_kill"
            else:
                text = (self.path / "memory.oom_control").read_text()
                key = "oom_kill"
            for line in text.splitlines():
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
            if self.version == 1:
                return int((self.path / "memory.failcnt").read_text())
        except OSError:
            pass
        return 0

    def remove(self) -> None:
        for path in (self.path, self.pids_path):
            try:
                if path is not None:
                    path.rmdir()
            except OSError:
                pass
