"""Agent invoke Tasks run the built-in invoke action by default: the gateway and taskctl agree on
the image (the project's one image, the one the manifests deploy) and on its entry point, which the
package installs as a console script."""

from __future__ import annotations

import shutil
import sys
import tomllib
from pathlib import Path

import yaml

from gateway.settings import KubeSettings
from taskctl.settings import DEFAULT_INVOKE_COMMAND, DEFAULT_INVOKE_IMAGE, Settings

ROOT = Path(__file__).resolve().parents[2]


def test_gateway_and_taskctl_default_to_the_invoke_action() -> None:
    assert (KubeSettings().invoke_image, KubeSettings().invoke_command) == ("fabric-tasks:dev", ("sys-invoke-skill",))
    assert (DEFAULT_INVOKE_IMAGE, DEFAULT_INVOKE_COMMAND) == ("fabric-tasks:dev", ("sys-invoke-skill",))
    assert (Settings().invoke_image, Settings().invoke_command) == (DEFAULT_INVOKE_IMAGE, DEFAULT_INVOKE_COMMAND)


def test_the_default_image_is_the_one_the_manifests_deploy() -> None:
    operator = yaml.safe_load((ROOT / "manifests" / "operator.yaml").read_text())
    images = {c["image"] for doc in [operator] if doc for c in doc["spec"]["template"]["spec"]["containers"]}
    assert images == {DEFAULT_INVOKE_IMAGE}


def test_the_entry_point_is_installed() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[DEFAULT_INVOKE_COMMAND[0]] == "invoke.__main__:main"
    assert shutil.which(DEFAULT_INVOKE_COMMAND[0], path=str(Path(sys.executable).parent)) is not None
