"""The triage console in the demo (issue 15): ``ticket-router run`` serves it with a made-up ``demo``
sign-in and prints where it is and how to sign in; the banner's text is pure, and the printed
password signs in over real HTTP."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest

from consumer.config import load_settings
from consumer.console.passwords import check_user, hash_password
from consumer.demo import DEMO_USER, console_banner, demo_console, url_host
from tests.test_console_http import sign_in
from tests.test_runtime_interrupt import demo_env, run_demo

BANNER = re.compile(r"triage console on (http://\S+)/console/ \(sign in as (\S+) / (\S+)\)")
API = {"api_port": 0, "api_tokens": "a:token-0123456789abcdef"}


def test_the_demo_makes_up_a_sign_in_and_its_banner_gives_the_url_and_the_password() -> None:
    settings, password = demo_console(load_settings())
    assert password is not None and settings.console_enabled and not settings.console_cookie_secure
    assert check_user(dict(settings.console_users), DEMO_USER, password)
    assert settings.api_port == 0 and settings.api_tokens  # the API port the console is served on
    assert console_banner(settings, 8123, password) == (
        f"triage console on http://127.0.0.1:8123/console/ (sign in as demo / {password}): "
        "the low-confidence tickets wait there"
    )
    assert console_banner(settings, None, password) is None  # no API server: no console


def test_a_console_configured_by_the_environment_is_left_alone_and_named_as_such() -> None:
    configured = load_settings(console_users=f"ana:{hash_password('pw')}", **API)
    settings, password = demo_console(configured)
    assert (settings, password) == (configured, None)
    banner = console_banner(settings, 8123, None)
    assert banner is not None and "(sign in as configured (CONSOLE_USERS))" in banner
    assert console_banner(load_settings(**API), 8123, None) is None  # the service's default: off


@pytest.mark.parametrize(
    ("host", "shown"),
    [("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "127.0.0.1"), ("::", "[::1]"), ("fe80::1", "[fe80::1]")],
)
def test_the_banner_gives_an_address_a_browser_can_open(host: str, shown: str) -> None:
    assert url_host(host) == shown


@pytest.mark.integration
async def test_ticket_router_run_prints_a_console_url_and_a_sign_in_that_works(bootstrap: str) -> None:
    demo = run_demo(demo_env(bootstrap, SESSION_TIMEOUT_MS="1000", HEARTBEAT_INTERVAL_MS="200"))
    try:
        line = await asyncio.to_thread(demo.wait_for, lambda text: "triage console on" in text)
        found = BANNER.search(line)
        assert found is not None, line
        base, user, password = found.groups()
        assert user == DEMO_USER
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            assert await sign_in(http, base, user, "not-" + password) == 401
            assert await sign_in(http, base, user, password) == 303
            async with http.get(f"{base}/console/") as inbox:
                assert inbox.status == 200 and "Sign out" in await inbox.text()
    except BaseException:
        demo.stop()
        raise
    status, _took, after = await asyncio.to_thread(demo.interrupt)
    assert status == 130 and not any("Traceback" in text for text in after), after
