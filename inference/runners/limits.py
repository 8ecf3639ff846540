"""The limits a runner runs under: its own memory cgroup (v2 or v1, as root), else an address-space rlimit.

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


class MemoryCgroup:
    """One runner's memory cgroup: `attach(pid)` after start; `oom_kills()` tells OOM kills from crashes."""

    def __init__(self, path: Path, version: int, limit_bytes: int):
        self.path, self.version = path, version
        path.mkdir(parents=True, exist_ok=True)
        if version == 2:
            (path / "memory.max").write_text(str(limit_bytes))
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
                if "memory" not in subtree.read_text():
                    subtree.write_text("+memory")
                return cls(parent / name, 2, limit_bytes)
            if (CGROUP_V1 / "memory.limit_in_bytes").exists():
                return cls(CGROUP_V1 / "modelport" / name, 1, limit_bytes)
        except OSError as exc:
            logger.warning("no memory cgroup for runners (%s): using an address-space limit", exc)
        return None

    def attach(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

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
        try:
            self.path.rmdir()
        except OSError:
            pass
