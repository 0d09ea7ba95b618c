# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Benchmarks of trl-presafety: cost against plain TRL, labeling throughput, and the efficacy study."""
