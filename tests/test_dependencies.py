"""The dependency contract (#31): the deployment lock (requirements.txt) pins, with hashes, versions that satisfy
every runtime requirement pyproject.toml declares, and nothing only the tests need; bounds name their reason."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PIN = re.compile(
    r"^([A-Za-z0-9._-]+)==([^ ;\\]+)(?: ;[^\\]*)? \\\n((?:    --hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)", re.M
)


def locked() -> dict[str, tuple[str, list[str]]]:
    """Each package the lock pins: its version and hashes."""
    text = (ROOT / "requirements.txt").read_text()
    return {canonicalize_name(m[1]): (m[2], re.findall(r"[0-9a-f]{64}", m[3])) for m in PIN.finditer(text)}


def test_the_lock_pins_every_runtime_requirement_within_its_bounds_with_hashes() -> None:
    pins = locked()
    text = (ROOT / "requirements.txt").read_text()
    assert len(pins) == text.count("=="), "every pin has its hashes"
    for line in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements.txt: refresh it (README, Deploying)"
        version, hashes = pins[name]
        assert requirement.specifier.contains(version), f"{name}=={version} is outside {requirement.specifier}"
        assert hashes


def test_the_lock_holds_nothing_only_the_tests_need() -> None:
    pins = locked()
    for line in PYPROJECT["project"]["optional-dependencies"]["dev"]:
        assert canonicalize_name(Requirement(line).name) not in pins


def test_every_upper_bound_says_why_and_the_procfile_runs_from_the_lock() -> None:
    source = (ROOT / "pyproject.toml").read_text()
    bounded = [line for line in source.splitlines() if re.search(r'^\s+"[^"]*,<[^"]*"', line)]
    assert bounded, "uvicorn and redis-py are bounded"
    for line in bounded:
        above = source[: source.index(line)].splitlines()
        comment = []  # the comment block right above the requirement
        while above and above[-1].strip().startswith("#"):
            comment.append(above.pop())
        assert "Tested on" in "".join(comment), f"no reason given for {line.strip()}"
    # The lock does not install chatsse itself (it cannot be hashed): the Procfile runs it from the checkout.
    assert (ROOT / "Procfile").read_text().startswith("web: python -m chatsse serve ")
