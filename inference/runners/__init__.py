"""Runners: the untrusted side of serving. Model files are opened and run only in runner processes.

- `runner.py` is the runner process itself (no Django, no secrets, no database, limited memory and time);
- `runtimes.py` wraps ONNX Runtime and PyTorch for it;
- `protocol.py` is the framing both sides speak over the runner's pipes;
- `limits.py` gives a runner its memory cgroup (`marketplace/sandbox/confine.py` sets its rlimits as it
  starts);
- `pool.py` is the trusted side: runner processes, their time limit and replacement, and the per-model
  scheduler;
- `supervisor.py` feeds the pool from Redis (interactive calls) and a local socket (jobs), in the worker."""
