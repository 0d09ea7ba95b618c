# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Efficacy study: does the pre-CoT loss make a reasoning model safer than plain SFT on the same data? (issue 15)"""
