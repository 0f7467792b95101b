"""The web page's pause, resume and delete buttons against the real API server: headless chromium
(selenium) on the real gateway, which holds a ``KubeClient`` authenticated as its own
ServiceAccount (``gateway_kubeconfig``, RBAC of ``manifests/gateway/``). A user token with write
scope on the namespace clicks Pause, then Resume, then Delete with its confirmation; after each
click the Task resource itself says it happened. The page's other behaviour, without a cluster:
``tests/unit/test_webpage_browser.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from tasks import eventually, task, task_manifest

from controller.kube import NotFound
from controller.kube.resources import TASKS
from gateway.auth import parse_user_tokens
from gateway.settings import KubeSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))  # the browser and gateway helpers
from browser import browser, css, loaded, sign_in, step, wait  # noqa: E402,F401 - browser: a fixture
from webgw import serving, settings_for  # noqa: E402

pytestmark = pytest.mark.e2e
WRITER = "writer-token-" + "7" * 24


async def test_pause_resume_and_delete_from_the_page(
    installed: str, kube: Any, namespace: str, gateway_kubeconfig: str, browser: Any, tmp_path: Path  # noqa: F811
) -> None:
    users = parse_user_tokens(json.dumps({"tokens": [{"user": "ops", "token": WRITER, "write": [namespace]}]}))
    kube_settings = KubeSettings(kubeconfig=gateway_kubeconfig, namespace="default")
    await kube.create(TASKS, task_manifest("nightly", schedule="@yearly"), namespace=namespace)
    async with serving(settings_for(tmp_path, users, kube_settings)) as gw:
        await gw.record("nightly", namespace, kind="task", type="scheduled", schedule="@yearly", status="Active",
                        spec={"schedule": "@yearly"})
        url = gw.running.public_url

        def click(op: str, message: str) -> None:
            css(browser, f'[data-op="{op}"]').click()
            if op == "delete":
                dialog = wait(browser, lambda d: css(d, "#confirm-delete").is_displayed() and css(d, "#confirm-delete"),
                              "the delete confirmation")
                css(dialog, 'button[value="delete"]').click()
            wait(browser, lambda d: css(d, "#status").text == message, message)

        def opened() -> None:
            sign_in(browser, f"{url}/ui/tasks/nightly", WRITER)
            loaded(browser, "task")
            assert css(browser, '[data-op="pause"]').is_displayed()
            click("pause", 'Successfully paused task "nightly"')
            # Resume takes the place (and the focus) of Pause.
            wait(browser, lambda d: d.switch_to.active_element == css(d, '[data-op="resume"]'), "focus on Resume")
            assert not css(browser, '[data-op="pause"]').is_displayed()

        await step(opened)
        assert (await task(kube, namespace, "nightly"))["spec"]["suspend"] is True
        await step(click, "resume", 'Successfully resumed task "nightly"')
        assert (await task(kube, namespace, "nightly"))["spec"]["suspend"] is False
        await step(click, "delete", 'Successfully marked task "nightly" for delete')

        async def gone() -> bool:
            try:
                await task(kube, namespace, "nightly")
            except NotFound:
                return True
            return False

        assert await eventually(gone, timeout=60, message="the Task is deleted")
