# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""`python benchmarks/<name>.py ARGS` runs `python -m benchmarks.<name> ARGS`.

The benchmarks are modules of the `benchmarks` package, which a script started by its path does not see: Python puts
the script's folder on `sys.path`, not the repository. So that the commands recorded in `RESULTS.md` (and any written
that way) keep working, a benchmark started by its path imports this module from its folder and is executed again as
a module, with the repository on `PYTHONPATH` (as `run_in_subprocess` starts its workers), in the same process slot:
same working directory, arguments, exit code.
"""

import os
import sys
from pathlib import Path


def run_as_module(script: str) -> None:
    """Replaces this process by `python -m benchmarks.<stem of script> <this process's arguments>`."""
    path = Path(script).resolve()
    pythonpath = [str(path.parents[1])] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(pythonpath))
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", f"benchmarks.{path.stem}", *sys.argv[1:]], env)
