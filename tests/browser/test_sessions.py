"""A tab left open knows when its sign-in ended: logging out in one tab turns the other tab's
live indicator to "signed out" with a link to sign in again and come back (no endless
reconnecting), while a password change in one tab keeps the other tab of that browser live."""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import login, wait_online

pytestmark = pytest.mark.browser

NEW_PASSWORD = "staple-orbit-lantern-9"


def test_logging_out_in_one_tab_tells_the_other_tab_it_was_signed_out(portal_server, new_page):
    """Given two tabs of one signed-in browser, both live; when one logs out; then the other
    says it was signed out, offers to sign in again back to its page, and stays signed out."""
    data = portal_server.seed("active_project('tabs')")
    watched = new_page(tolerated=("401",))
    first = watched.page
    login(first, data["homeowner"], data["password"])
    second = first.context.new_page()
    second.goto(f"/projects/{data['project_id']}/")
    wait_online(first)
    wait_online(second)

    first.get_by_role("button", name="Log out").click()

    expect(second.locator("#connection")).to_have_text("signed out")
    notice = second.get_by_role("alert")
    expect(notice).to_contain_text("You were signed out")
    link = notice.get_by_role("link", name="Sign in again")
    expect(link).to_have_attribute(
        "href", f"/accounts/login/?next=%2Fprojects%2F{data['project_id']}%2F"
    )
    link.click()
    expect(second).to_have_url(re.compile(r"/accounts/login/\?next=%2Fprojects%2F"))


def test_a_password_change_in_one_tab_keeps_the_other_tab_live(portal_server, new_page):
    """Given two tabs of one signed-in browser; when one changes the password; then the other
    tab's socket is closed but it finds the browser still signed in and is live again."""
    data = portal_server.seed("active_project('pwtabs')")
    watched = new_page()
    first = watched.page
    login(first, data["homeowner"], data["password"])
    second = first.context.new_page()
    sockets = []
    second.on("websocket", lambda websocket: sockets.append(websocket))
    second.goto(f"/projects/{data['project_id']}/")
    wait_online(second)

    first.goto("/accounts/password/")
    first.locator("#id_old_password").fill(data["password"])
    first.locator("#id_new_password1").fill(NEW_PASSWORD)
    first.locator("#id_new_password2").fill(NEW_PASSWORD)
    first.get_by_role("button", name=re.compile("Change", re.I)).click()
    expect(first).to_have_url(re.compile(r"/accounts/password/done/$"))
    # The second tab's socket is closed (4001); it asks, is still signed in, opens a new one.
    for _ in range(150):  # at most 15 s for the close, the check and the new socket
        if len(sockets) > 1 and not sockets[-1].is_closed():
            break
        second.wait_for_timeout(100)

    assert sockets[0].is_closed()
    assert len(sockets) > 1
    wait_online(second)
    expect(second.locator("#signed-out")).to_have_count(0)
    assert watched.errors == []
