"""Suite-wide settings: hypothesis without wall-clock deadlines, reproducible in CI."""

from __future__ import annotations

import os

from hypothesis import settings

# A loaded 2-core CI box is slow; a deadline there measures the machine, not the code.
settings.register_profile("default", deadline=None, print_blob=True)
# CI replays the same examples every run, so a red build is reproducible locally with
# HYPOTHESIS_PROFILE=ci.
settings.register_profile("ci", deadline=None, print_blob=True, derandomize=True)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default")
)
