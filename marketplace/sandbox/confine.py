"""Kernel confinement for every process that opens an uploaded file: the upload check, the optimizer and the
inference runners. `spawn()` is the one way such a process is started.

With the sandbox on (`INFERENCE_SANDBOX`, the default) the child runs under bubblewrap (`bwrap`):
- new PID, network, IPC and UTS namespaces: it sees only its own processes and has no network at all (not
  even loopback), so it cannot reach the web, Redis, PostgreSQL or another host;
- a mount namespace whose root is an empty tmpfs holding, read-only, only what the runtime needs (`/usr`, the
  Python installation and virtualenv, the few project packages a child imports) plus the files the caller
  names (`read_only`, `writable`); a private `/tmp`; its own `/proc` and a minimal `/dev`;
- a seccomp filter (`seccomp_program`) refusing what no runtime needs: sockets other than Unix ones,
  `ptrace`, mounts, namespaces, `bpf`, `keyctl`, `io_uring`, kernel modules, …;
- no capabilities, and never root: started by a root worker, the child drops to the runner user's uid and
  gid (here, after the mounts are made and before anything untrusted runs), then sets `no_new_privs` and its
  rlimits and `exec`s the program. A non-root worker's children keep its uid, in a user namespace.

Run as a script (`python -I confine.py [--uid U --gid G] [--address-space-mb N] … -- ARGS…`) this module is
that first step inside the sandbox. The limits are set here, after the fork, rather than in a `preexec_fn`,
which can deadlock in the child of a threaded parent. Nothing here imports Django or reads an uploaded file.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The project's code a confined child may import: the runner and its runtimes, the upload check and the
# optimizer. Never the project's root (its data folder may hold every stored model and the database).
CHILD_CODE = (
    "inference/__init__.py",
    "inference/codec.py",
    "inference/runners",
    "inference/llm",
    "marketplace/__init__.py",
    "marketplace/tokenization.py",
    "marketplace/sandbox",
)
# Host files a runtime reads, when present: the dynamic linker's cache (libraries in multiarch folders).
RUNTIME_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/sys/devices/system/cpu")


# A fork() in another thread while Popen waits for its child's exec copies Popen's error pipe into a process
# that never execs (a Celery pool process), and Popen then waits for that process to exit. So Python-level
# forks wait for the spawns in progress (Popen itself forks without running these hooks).
_spawning = threading.RLock()
os.register_at_fork(
    before=_spawning.acquire, after_in_parent=_spawning.release, after_in_child=_spawning.release
)


class SandboxUnavailable(RuntimeError):
    """The kernel refused the sandbox (or bwrap is missing), or confinement would run a child as root."""


@dataclass(frozen=True)
class Confinement:
    """How confined children are started. `user`: the account they run as when the worker is root."""

    sandbox: bool = True
    user: str = ""
    # Nothing but the benchmark's baseline, on a model it built itself: no sandbox, no change of user.
    measuring_baseline: bool = False


# --- inside the sandbox -------------------------------------------------------------------------------------


def confine(
    *, uid: int, gid: int, address_space_mb: int, cpu_seconds: int, file_size_mb: int, parent: int
) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if uid >= 0 and os.getuid() == 0:
        # Before anything untrusted runs: no supplementary groups, then the gid, then the uid (which clears
        # every capability the child still had).
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        if os.getuid() == 0 or os.geteuid() == 0:
            os._exit(1)
    if parent:
        # Unsandboxed: killed when the thread that started it ends; if that happened already, go now. (In the
        # sandbox, bwrap's --die-with-parent does this.)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if address_space_mb:
        limit = address_space_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if cpu_seconds:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    if file_size_mb:
        limit = file_size_mb << 20
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uid", type=int, default=-1)
    parser.add_argument("--gid", type=int, default=-1)
    parser.add_argument("--address-space-mb", type=int, default=0)
    parser.add_argument("--cpu-seconds", type=int, default=0)
    parser.add_argument("--file-size-mb", type=int, default=0)
    parser.add_argument("--parent", type=int, default=0)
    parser.add_argument("--chdir", default="")
    parser.add_argument("program", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    program = args.program[1:] if args.program[:1] == ["--"] else args.program
    confine(
        uid=args.uid,
        gid=args.gid,
        address_space_mb=args.address_space_mb,
        cpu_seconds=args.cpu_seconds,
        file_size_mb=args.file_size_mb,
        parent=args.parent,
    )
    if args.chdir:  # as the runner user: bwrap, root without capabilities, may not enter its folder
        os.chdir(args.chdir)
    os.execv(sys.executable, [sys.executable, *program])  # noqa: S606 - argv, no shell


# --- the trusted side ---------------------------------------------------------------------------------------


def spawn(
    program: list[str],
    *,
    confinement: Confinement,
    env: dict[str, str],
    cwd: str = "/tmp",  # noqa: S108 - the child's own tmpfs when sandboxed
    read_only: tuple[str, ...] = (),
    writable: tuple[str, ...] = (),
    address_space_mb: int = 0,
    cpu_seconds: int = 0,
    file_size_mb: int = 0,
    isolated: bool = False,
    pass_fds: tuple[int, ...] = (),
    stdout=None,
    stderr=None,
) -> subprocess.Popen:
    """Start `python [-I] program…` confined: `read_only` and `writable` name the only host paths it sees
    (at the same paths), besides the runtime. Raises SandboxUnavailable rather than run a child as root or
    without a sandbox the settings ask for."""
    uid = gid = -1
    if os.geteuid() == 0 and not confinement.measuring_baseline:
        if not confinement.user:
            raise SandboxUnavailable(
                "Refusing to run untrusted model code as root: set INFERENCE_RUNNER_USER to an unprivileged "
                "account (`make run` and the test suite create `modelport-runner`)."
            )
        uid, gid = runner_identity(confinement.user)
    limits = [
        f"--uid={uid}",
        f"--gid={gid}",
        f"--address-space-mb={address_space_mb}",
        f"--cpu-seconds={cpu_seconds}",
        f"--file-size-mb={file_size_mb}",
    ]
    child = [*(["-I"] if isolated else []), *program]
    if not confinement.sandbox or confinement.measuring_baseline:
        argv = [sys.executable, "-I", __file__, *limits, f"--parent={os.getpid()}", "--", *child]
        return _popen(argv, cwd=cwd, env=env, pass_fds=pass_fds, stdout=stdout, stderr=stderr)
    filter_fd = seccomp_memfd()
    try:
        argv = [
            bwrap_path(),
            *bwrap_arguments(read_only=read_only, writable=writable, root=os.geteuid() == 0),
            "--seccomp",
            str(filter_fd),
            "--",
            sys.executable,
            "-I",
            __file__,
            *limits,
            f"--chdir={cwd}",
            "--",
            *child,
        ]
        return _popen(argv, cwd=None, env=env, pass_fds=(*pass_fds, filter_fd), stdout=stdout, stderr=stderr)
    finally:
        os.close(filter_fd)


def _popen(argv: list[str], *, cwd, env, pass_fds, stdout, stderr) -> subprocess.Popen:
    with _spawning:
        return subprocess.Popen(  # noqa: S603 - argv, no shell
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            pass_fds=pass_fds,
            close_fds=True,
            start_new_session=True,
        )


def exit_signal(returncode: int | None) -> int:
    """The signal that ended a confined child, whether it was waited for directly (-N) or through bwrap,
    which exits with 128 + N when its command is killed; 0 when it exited."""
    if returncode is None:
        return 0
    if returncode < 0:
        return -returncode
    return returncode - 128 if 128 < returncode < 128 + 65 else 0


@functools.cache
def runner_identity(user: str) -> tuple[int, int]:
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise SandboxUnavailable(f"INFERENCE_RUNNER_USER {user!r} is not an account on this host.") from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise SandboxUnavailable(f"INFERENCE_RUNNER_USER {user!r} is root: name an unprivileged account.")
    return entry.pw_uid, entry.pw_gid


def bwrap_path() -> str:
    found = shutil.which("bwrap")
    if not found:
        raise SandboxUnavailable(
            "bubblewrap (`bwrap`) is not installed: install Debian's `bubblewrap` package, or set "
            "INFERENCE_SANDBOX=off (development only)."
        )
    return found


def bwrap_arguments(*, read_only, writable, root: bool) -> list[str]:
    made: set[str] = {"/"}
    arguments: list[str] = []

    def parents(path: str) -> None:
        # bwrap makes missing parents 0700 and root's: the child, another user, could not walk through them.
        parent = os.path.dirname(path)
        if parent in made:
            return
        parents(parent)
        arguments.extend(["--perms", "0755", "--dir", parent])
        made.add(parent)

    def bind(option: str, path: str) -> None:
        parents(path)
        arguments.extend([option, path, path])
        made.add(path)

    for top in ("/bin", "/lib", "/lib64", "/sbin"):
        if os.path.islink(top):
            arguments.extend(["--symlink", os.readlink(top), top])
        elif os.path.isdir(top):
            bind("--ro-bind", top)
    bind("--ro-bind", "/usr")
    for prefix in dict.fromkeys((os.path.realpath(sys.base_prefix), sys.base_prefix, sys.prefix)):
        if not prefix.startswith("/usr/") and os.path.exists(prefix):
            bind("--ro-bind", prefix)
    for relative in CHILD_CODE:
        path = os.path.join(PROJECT_ROOT, relative)
        if os.path.exists(path):
            bind("--ro-bind", path)
    for path in RUNTIME_FILES:
        if os.path.exists(path):
            bind("--ro-bind", path)
    for path in read_only:
        bind("--ro-bind", os.path.abspath(path))
    for path in writable:
        bind("--bind", os.path.abspath(path))
    namespaces = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if root:
        # Root in the sandbox only long enough to drop to the runner user (`confine` above).
        capabilities = ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        namespaces.append("--unshare-user")
        capabilities = ["--cap-drop", "ALL"]
    return [
        *namespaces,
        *capabilities,
        "--die-with-parent",
        "--new-session",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--perms",
        "01777",
        "--tmpfs",
        "/tmp",  # noqa: S108 - the child's own
        *arguments,
        "--chdir",
        "/",
    ]


# System calls a model runtime never makes. Each fails with EPERM (a runtime may probe and carry on); sockets
# other than AF_UNIX fail with EAFNOSUPPORT, as on a host without that family.
REFUSED_SYSCALLS = (
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_getfd",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsmount",
    "fsconfig",
    "fspick",
    "mount_setattr",
    "unshare",
    "setns",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "syslog",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "iopl",
    "ioperm",
    "open_by_handle_at",
    "name_to_handle_at",
    "fanotify_init",
    "lookup_dcookie",
    "vhangup",
    "personality",
    # A runner's files are the worker's, handed to it read-only: it may not change their modes or owners.
    "chmod",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "fchown",
    "lchown",
    "fchownat",
)
# clone(2) flags that would make a new namespace: CLONE_NEWTIME, NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER,
# NEWPID, NEWNET.
NAMESPACE_FLAGS = (0x80, 0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
AF_UNIX = 1


@functools.cache
def seccomp_program() -> bytes:
    """The filter, as the BPF program bwrap's --seccomp loads (built with libseccomp, through pyseccomp)."""
    import tempfile

    import pyseccomp as seccomp

    rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for name in REFUSED_SYSCALLS:
        try:
            rules.add_rule(seccomp.ERRNO(errno.EPERM), name)
        except (RuntimeError, ValueError, OSError):  # not a system call of this architecture
            continue
    rules.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.NE, AF_UNIX))
    for flag in NAMESPACE_FLAGS:
        rules.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    # clone3 passes its flags in memory, which a filter cannot read: ENOSYS makes the C library use clone.
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    with tempfile.TemporaryFile() as program:
        rules.export_bpf(program)
        program.seek(0)
        return program.read()


def seccomp_memfd() -> int:
    fd = os.memfd_create("modelport-seccomp", 0)  # no CLOEXEC: bwrap inherits it
    os.write(fd, seccomp_program())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


@functools.cache
def sandbox_problem() -> str:
    """Why this host cannot confine children (bwrap missing, namespaces refused), or "" when it can."""
    try:
        bwrap = bwrap_path()
    except SandboxUnavailable as exc:
        return str(exc)
    probe = subprocess.run(  # noqa: S603 - argv, no shell
        [
            bwrap,
            *bwrap_arguments(read_only=(), writable=(), root=os.geteuid() == 0),
            "--",
            "/bin/true",
        ],
        capture_output=True,
        timeout=30,
    )
    if probe.returncode:
        detail = probe.stderr.decode(errors="replace").strip()
        return f"the kernel refused bubblewrap's namespaces ({detail or probe.returncode})"
    return ""


if __name__ == "__main__":
    main()
