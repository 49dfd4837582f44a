"""``make test-min`` runs the fast suite on the oldest ``requests`` and ``urllib3`` that
pyproject.toml allows: the Makefile's pins and the lower bounds must be the same versions."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_oldest_run_pins_the_lower_bounds_of_pyproject():
    pinned = dict(
        re.findall(
            r"'([a-z0-9]+)==([0-9.]+)'",
            re.search(r"^MIN_DEPENDENCIES := (.*)$", (REPO / "Makefile").read_text(), re.M)[1],
        )
    )
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    bounds = dict(
        re.fullmatch(r"([a-z0-9]+)>=([0-9.]+)", spec).groups()
        for spec in project["dependencies"]
        if spec.startswith(("requests", "urllib3"))
    )
    assert set(bounds) == {"requests", "urllib3"}
    assert pinned == {name: _padded(version) for name, version in bounds.items()}


def _padded(version: str) -> str:
    """``2.31`` as pip reads it: ``2.31.0``."""
    return version if version.count(".") >= 2 else version + ".0"
