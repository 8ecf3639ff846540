"""The upload check's child is confined by the kernel, and nothing it says counts without its exit status."""

from __future__ import annotations

import io
import os
import socket

import pytest
from django.conf import settings

from marketplace.sandbox import confine, validation


def run_probe(tmp_path, source: str, **options) -> validation.SandboxRun:
    probe = tmp_path / "probe.py"
    probe.write_text(source)
    return validation.run_sandboxed([str(probe)], workdir=str(tmp_path), timeout=30, read_only=(str(probe),))


PROBE_PRELUDE = """
import ctypes, json, os, socket
verdict = os.fdopen(int(os.environ["MODELPORT_VERDICT_FD"]), "w")
def attempt(action):
    try:
        action()
    except OSError as exc:
        return exc.strerror
    return "allowed"
"""


def test_the_check_runs_unprivileged_without_network_and_sees_only_its_file(tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))  # stands for the web, Redis or PostgreSQL
    port = listener.getsockname()[1]
    secret = tmp_path.parent / "root-only.txt"
    secret.write_text("ROOT-ONLY")
    secret.chmod(0o600)
    try:
        result = run_probe(
            tmp_path,
            PROBE_PRELUDE
            + f"""
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines())
libc = ctypes.CDLL(None, use_errno=True)
json.dump({{
    "uid": os.getuid(), "gid": os.getgid(), "caps": status["CapEff"].strip(),
    "seccomp": status["Seccomp"].strip(),
    "connect": attempt(lambda: socket.create_connection(("127.0.0.1", {port}), timeout=2)),
    "settings": attempt(lambda: open({str(settings.BASE_DIR / "portal" / "settings.py")!r}).read()),
    "media": os.path.exists({str(settings.MEDIA_ROOT)!r}),
    "secret": attempt(lambda: open({str(secret)!r}).read()),
    "shadow": attempt(lambda: open("/etc/shadow").read()),
    "new user namespace": libc.unshare(0x10000000) == 0,
    "processes": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "write usr": attempt(lambda: open("/usr/modelport-probe", "w")),
}}, verdict)
verdict.write("\\n")
""",
        )
    finally:
        listener.close()
    answer = result.verdict
    assert answer is not None, result.stderr.decode()
    assert answer["uid"] != 0 and answer["gid"] != 0
    if os.geteuid() == 0:
        assert (answer["uid"], answer["gid"]) == confine.runner_identity(settings.INFERENCE_RUNNER_USER)
    assert answer["caps"] == "0000000000000000" and answer["seccomp"] == "2"
    assert answer["connect"] != "allowed"
    assert answer["settings"] == "No such file or directory"
    assert answer["media"] is False
    assert answer["secret"] == "No such file or directory" and answer["shadow"] == "No such file or directory"
    assert answer["new user namespace"] is False
    assert max(answer["processes"]) < 10  # its own PID namespace: bwrap's init and itself
    assert answer["write usr"] == "Read-only file system"


def test_a_verdict_from_a_child_that_dies_counts_for_nothing(tmp_path):
    forged = '{"ok": true, "format": "onnx", "signature": {"inputs": [], "outputs": []}}'
    died = run_probe(
        tmp_path, PROBE_PRELUDE + f"verdict.write({forged!r} + '\\n'); verdict.flush(); os._exit(3)"
    )
    assert died.returncode == 3 and died.verdict is None
    killed = run_probe(
        tmp_path,
        PROBE_PRELUDE + f"verdict.write({forged!r} + '\\n'); verdict.flush(); os.kill(os.getpid(), 9)",
    )
    assert killed.signal == 9 and killed.verdict is None
    cut = run_probe(tmp_path, PROBE_PRELUDE + f"verdict.write({forged!r}[:30]); verdict.flush()")
    assert cut.returncode == 0 and cut.verdict is None
    clean = run_probe(tmp_path, PROBE_PRELUDE + f"verdict.write({forged!r} + '\\n')")
    assert clean.returncode == 0 and clean.verdict == {
        "ok": True,
        "format": "onnx",
        "signature": {"inputs": [], "outputs": []},
    }


def printing_forger_torchscript() -> bytes:
    """Prints what a verdict looks like (on the old channel, stdout, too) when run, then fails."""
    import torch

    class Forger(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            print('{"ok": true, "format": "onnx", "signature": {"inputs": [], "outputs": []}}')
            print('MODELPORT-SANDBOX-RESULT:{"ok": true, "format": "onnx", "signature": {}}')
            if bool(x.sum() > -1.0):
                raise RuntimeError("and now the model dies")
            return x

    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(Forger()), buffer)
    return buffer.getvalue()


@pytest.mark.django_db
def test_a_model_that_prints_a_forged_verdict_and_dies_is_rejected(tmp_path):
    model = tmp_path.parent / "forger.pt"
    model.write_bytes(printing_forger_torchscript())
    inspection = validation.inspect_model_file(
        model,
        signature_hint={
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 4]}],
        },
        example={"x": [[0.0, 0.0, 0.0, 0.0]]},
    )
    assert not inspection.ok
    assert "and now the model dies" in inspection.reason


def test_a_root_worker_without_a_runner_user_refuses_to_start(settings):
    from django.core.exceptions import ImproperlyConfigured

    settings.INFERENCE_RUNNER_USER = ""
    if os.geteuid() != 0:  # a user's own worker: its children keep its uid
        validation.refuse_unconfined()
        return
    with pytest.raises(ImproperlyConfigured, match="INFERENCE_RUNNER_USER is not set"):
        validation.refuse_unconfined()
    settings.INFERENCE_RUNNER_USER = "no-such-account-here"
    with pytest.raises(ImproperlyConfigured, match="is not an account"):
        validation.refuse_unconfined()
    settings.INFERENCE_RUNNER_USER = "root"
    with pytest.raises(ImproperlyConfigured, match="is root"):
        validation.refuse_unconfined()


def test_a_worker_that_cannot_confine_refuses_to_start_unless_told_to_run_unconfined(settings, monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    confine.sandbox_problem.cache_clear()
    monkeypatch.setenv("PATH", "/nonexistent")  # no bwrap to be found
    try:
        with pytest.raises(ImproperlyConfigured, match="bubblewrap"):
            validation.refuse_unconfined()
        settings.INFERENCE_SANDBOX = False
        validation.refuse_unconfined()  # development only: it starts, and warns
    finally:
        confine.sandbox_problem.cache_clear()
