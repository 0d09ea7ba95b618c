# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""`trl-presafety pipeline`: the pipeline file and its stages (`config.py`), what each stage reads and writes
(`stage_io.py`), and running them (`run.py`)."""
