"""Where uploaded model files are checked and confined. Nothing in this package imports Django at import time
except `validation`, so the confined children import their siblings as plain modules.

- `confine.py`: the kernel confinement every process that opens an uploaded file runs under (bubblewrap:
  its own unprivileged user, no network, a read-only filesystem holding the runtime and its one file,
  seccomp), and the rlimits it sets on itself inside;
- `archives.py`: static checks of a file's bytes before anything loads it (magic, zip bombs, pickles);
- `inspect_file.py`: the upload check's confined child: identify, check structure, trial-run;
- `trials.py`: the trial run's inputs;
- `optimize_file.py`: the optimizer's confined child (ONNX Runtime quantization, measured);
- `validation.py`: the trusted side of the upload check, which starts the child and reads its verdict.
"""
