"""requirements/*.lock against pyproject.toml: every declared dependency is pinned (at a version its
specifier allows) with hashes, the image's pins are the tests' pins, and the runtime code imports
nothing the image's lock lacks. Regenerate the locks with tools/lock.sh when this fails."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
RUNTIME_PACKAGES = ("controller", "gateway", "taskctl", "invoke")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def read_lock(name: str) -> dict[str, str]:
    """Package (canonical name) -> pinned version; every pin must carry at least one sha256."""
    text = (ROOT / "requirements" / name).read_text()
    pins: dict[str, str] = {}
    for block in re.split(r"\n(?=\S)", text):
        match = PIN.match(block)
        if match is None:
            assert block.startswith("#") or not block.strip(), f"{name}: not a pin: {block[:80]!r}"
            continue
        assert "--hash=sha256:" in block, f"{name}: {match.group(1)} has no hash"
        pins[canonicalize_name(match.group(1))] = match.group(2)
    assert pins, f"{name} pins nothing"
    return pins


def runtime_requirements() -> list[Requirement]:
    return [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]


def extra_test_requirements() -> list[Requirement]:
    return [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["test"]]


def build_requirements() -> list[Requirement]:
    return [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]


def unpinned(requirements: list[Requirement], pins: dict[str, str]) -> list[str]:
    problems = []
    for req in requirements:
        version = pins.get(canonicalize_name(req.name))
        if version is None:
            problems.append(f"{req} is not in the lock")
        elif not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req}: the lock pins {version}")
    return problems


def test_read_lock_and_unpinned_find_what_is_wrong():
    """Guards the checks below: a missing package and a pin outside the specifier are reported."""
    pins = {"aiohttp": "3.8.0"}
    assert unpinned([Requirement("aiohttp>=3.9"), Requirement("pyyaml>=6")], pins) == [
        "aiohttp>=3.9: the lock pins 3.8.0", "pyyaml>=6 is not in the lock"]


def test_runtime_lock_pins_every_dependency():
    assert unpinned(runtime_requirements(), read_lock("runtime.lock")) == []


def test_test_lock_pins_every_dependency_and_the_test_extra():
    assert unpinned(runtime_requirements() + extra_test_requirements(), read_lock("test.lock")) == []


def test_build_lock_pins_the_build_system():
    assert unpinned(build_requirements(), read_lock("build.lock")) == []


def test_the_tests_run_the_versions_the_image_runs():
    runtime, tests = read_lock("runtime.lock"), read_lock("test.lock")
    assert {name: tests.get(name) for name in runtime} == runtime


def test_the_image_carries_no_test_tool():
    runtime = read_lock("runtime.lock")
    declared = {canonicalize_name(r.name) for r in runtime_requirements()}
    only_tests = {canonicalize_name(r.name) for r in extra_test_requirements()} - declared
    assert only_tests & set(runtime) == set()
    assert "croniter" in only_tests, "croniter is a test oracle only (tests/unit/test_model_schedule.py)"


def imported_top_levels(package: str) -> set[str]:
    names = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", RUNTIME_PACKAGES)
def test_runtime_code_imports_only_what_the_image_installs(package):
    """Every third-party module the runtime code imports belongs to a distribution in
    runtime.lock, so moving a package to the test extra cannot break the image."""
    distributions = importlib.metadata.packages_distributions()
    runtime = set(read_lock("runtime.lock"))
    ours = set(RUNTIME_PACKAGES)
    missing = {}
    for module in imported_top_levels(package) - ours - set(sys.stdlib_module_names) - {"__future__"}:
        owners = {canonicalize_name(d) for d in distributions.get(module, [])}
        assert owners, f"{package} imports {module}, which no installed distribution provides"
        if not owners & runtime:
            missing[module] = sorted(owners)
    assert missing == {}
