"""The portal in a real Chromium against a real Daphne: login, the whole milestone journey
with the homeowner and the contractor side by side (each sees the other's action appear
without reloading), reconnecting after a server restart, no console errors, screenshots."""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import (
    Watched,
    accessibility_problems,
    login,
    screenshot,
    wait_online,
)

pytestmark = pytest.mark.browser

LIVE_TIMEOUT = 20_000


def mark_page(page) -> None:
    """Leave a marker in the page's JavaScript state: it survives only if nothing reloads."""
    page.evaluate("window.__noReload = 'still here'")


def assert_not_reloaded(page) -> None:
    assert page.evaluate("window.__noReload") == "still here"


def test_login_shows_the_dashboard_live_and_logout(portal_server, new_page):
    data = portal_server.seed("active_project('login')")
    watched = new_page()
    page = watched.page

    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
    page.get_by_label("Username").fill(data["homeowner"])
    page.get_by_label("Password").fill("wrong-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("correct username and password")
    screenshot(page, "login")

    login(page, data["homeowner"], data["password"])
    expect(page.get_by_role("heading", name="Dashboard", level=1)).to_be_visible()
    expect(page.get_by_text("Budget utilization per project")).to_be_visible()
    assert accessibility_problems(page) == []
    wait_online(page)
    expect(page.locator("#connection")).to_have_text("live")
    screenshot(page, "dashboard-homeowner")

    # Keyboard: the first Tab reaches the skip link, which becomes visible and moves focus.
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    box = skip.bounding_box()
    assert box is not None and box["x"] >= 0 and box["y"] >= 0
    page.keyboard.press("Enter")
    expect(page.locator("#main")).to_be_focused()

    # A page that names no channels still goes live (the user's own payments).
    page.goto("/notifications/")
    wait_online(page)
    screenshot(page, "notifications-empty")
    assert accessibility_problems(page) == []

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    assert watched.errors == []


def test_milestone_journey_live_in_two_windows(portal_server, new_page):
    data = portal_server.seed("active_project('journey')")
    milestone_id = data["milestone_ids"][0]
    project_url = f"/projects/{data['project_id']}/"
    status = f'[data-milestone-status="{milestone_id}"]'

    home_w, pro_w = new_page(), new_page()
    home, pro = home_w.page, pro_w.page
    login(home, data["homeowner"], data["password"])
    login(pro, data["contractor"], data["password"])

    # The homeowner saves the sandbox test card.
    home.goto("/payment-methods/")
    home.get_by_label("Visa •••• 4242 (succeeds)").check()
    home.get_by_role("button", name="Add card").click()
    expect(home.get_by_role("status").filter(has_text="Added")).to_be_visible()
    expect(home.locator("#methods-live")).to_contain_text("visa •••• 4242")
    screenshot(home, "payment-methods")
    assert accessibility_problems(home) == []

    for page in (home, pro):
        page.goto(project_url)
        wait_online(page)
    mark_page(pro)
    expect(pro.locator(status)).to_have_text("Awaiting funding")
    assert accessibility_problems(home) == []
    assert accessibility_problems(pro) == []
    screenshot(pro, "project-contractor-before")

    # Homeowner funds (confirmation step) → the contractor sees it funded, no reload.
    home.locator(f"#confirm-{milestone_id}-fund summary").click()
    expect(home.locator(f"#fund-method-{milestone_id}")).to_have_value(re.compile(r"\d+"))
    home.get_by_role("button", name="Yes, pay 2,500.00 USD").click()
    expect(home.get_by_text("Payment started for “Tiling”")).to_be_visible()
    wait_online(home)
    mark_page(home)
    expect(pro.locator(status)).to_have_text("Funded (in escrow)", timeout=LIVE_TIMEOUT)
    expect(home.locator(status)).to_have_text("Funded (in escrow)", timeout=LIVE_TIMEOUT)
    expect(home.locator(f'[data-milestone-escrow="{milestone_id}"]')).to_have_text(
        "2,500.00 USD", timeout=LIVE_TIMEOUT
    )
    expect(home.locator('[data-timeline^="payment."] li').first).to_be_visible()
    expect(pro.get_by_role("button", name="Mark work as done")).to_be_visible()
    assert_not_reloaded(pro)
    assert_not_reloaded(home)
    screenshot(home, "project-homeowner-funded")

    # Contractor submits → the homeowner sees it submitted, no reload.
    pro.get_by_role("button", name="Mark work as done").click()
    expect(pro.locator(status)).to_have_text("Work submitted")
    wait_online(pro)
    mark_page(pro)
    expect(home.locator(status)).to_have_text("Work submitted", timeout=LIVE_TIMEOUT)
    expect(home.locator(f"#confirm-{milestone_id}-approve summary")).to_be_visible()
    # The "ready for review" notification is counted in the navigation, live as well.
    expect(home.locator("[data-notifications-count]")).to_have_attribute(
        "data-notifications-count", "1", timeout=LIVE_TIMEOUT
    )
    assert_not_reloaded(home)

    # The contractor also watches the dashboard in a second tab (same session).
    dash_w = Watched(pro.context.new_page())
    dash = dash_w.page
    dash.goto("/")
    wait_online(dash)
    mark_page(dash)
    paid_out = dash.locator('[data-live-key="balance-usd-paid_out"]')
    expect(paid_out).to_have_text("0.00 USD")

    # Homeowner approves (confirmation step) → the contractor sees it released, no reload.
    home.locator(f"#confirm-{milestone_id}-approve summary").click()
    home.get_by_role("button", name=re.compile(r"^Yes, approve and release")).click()
    expect(home.locator(status)).to_have_text("Released")
    expect(pro.locator(status)).to_have_text("Released", timeout=LIVE_TIMEOUT)
    expect(pro.locator(f'[data-milestone-escrow="{milestone_id}"]')).to_have_text(
        "0.00 USD", timeout=LIVE_TIMEOUT
    )
    expect(pro.locator(f'[data-live-key="payout-{milestone_id}"]')).to_have_text(
        "Paid", timeout=LIVE_TIMEOUT
    )
    assert_not_reloaded(pro)
    screenshot(pro, "project-contractor-released")
    # ... and the dashboard tab shows the payout (2,500.00 less the 5 % fee), no reload.
    expect(paid_out).to_have_text("2,375.00 USD", timeout=LIVE_TIMEOUT)
    expect(dash.locator(".feed li").first).to_contain_text("Payout of 2,375.00 USD")
    assert_not_reloaded(dash)
    screenshot(dash, "dashboard-contractor-live")

    # The dashboards show the money where it went: 2,500.00 less the 5 % fee, paid out.
    pro.goto("/")
    expect(pro.get_by_text("Earnings per project")).to_be_visible()
    expect(pro.locator('[data-live-key="balance-usd-paid_out"]')).to_have_text(
        "2,375.00 USD", timeout=LIVE_TIMEOUT
    )
    screenshot(pro, "dashboard-contractor")
    pro.set_viewport_size({"width": 390, "height": 844})
    pro.goto(project_url)
    screenshot(pro, "project-contractor-mobile")
    home.goto("/notifications/")
    screenshot(home, "notifications")
    payment_link = pro.locator("a", has_text=re.compile(r"^Payment #"))
    if payment_link.count():
        payment_link.first.click()
        screenshot(pro, "payment-detail")

    assert home_w.errors == []
    assert pro_w.errors == []
    assert dash_w.errors == []


def test_reconnects_after_server_restart_and_gets_missed_events(portal_server, new_page):
    data = portal_server.seed("active_project('restart', funded=True)")
    milestone_id = data["milestone_ids"][0]
    status = f'[data-milestone-status="{milestone_id}"]'
    # While the server is down Chromium reports the refused WebSocket handshakes, and the
    # page's question whether it is still signed in (/api/v1/me, live.js); expected.
    watched = new_page(tolerated=("WebSocket connection to", "net::ERR_CONNECTION_REFUSED"))
    page = watched.page
    login(page, data["homeowner"], data["password"])
    page.goto(f"/projects/{data['project_id']}/")
    wait_online(page)
    mark_page(page)
    expect(page.locator(status)).to_have_text("Funded (in escrow)")

    portal_server.stop()
    expect(page.locator("#connection")).not_to_have_attribute("data-state", "online")
    expect(page.locator("#connection")).to_have_attribute(
        "data-state", re.compile("offline|connecting")
    )
    # The contractor submits while this page is cut off.
    portal_server.seed(f"submit({milestone_id})")
    portal_server.start()

    wait_online(page)
    expect(page.locator(status)).to_have_text("Work submitted", timeout=LIVE_TIMEOUT)
    expect(page.locator(f"#confirm-{milestone_id}-approve summary")).to_be_visible(
        timeout=LIVE_TIMEOUT
    )
    assert_not_reloaded(page)
    screenshot(page, "project-after-reconnect")
    assert watched.errors == []


def test_operator_admin_index_and_project_page(portal_server, new_page):
    data = portal_server.seed("active_project('ops')")
    operator = portal_server.seed("operator('ops')")
    watched = new_page()
    page = watched.page
    login(page, operator["username"], operator["password"])
    page.goto(f"/projects/{data['project_id']}/")
    expect(page.get_by_role("heading", name="Bathroom ops", level=1)).to_be_visible()
    wait_online(page)
    page.goto("/admin/")
    expect(page.get_by_role("heading", name="Needs attention")).to_be_visible()
    screenshot(page, "admin-index")
    assert watched.errors == []


def test_resync_when_the_missed_events_are_no_longer_replayable(portal_server, new_page):
    data = portal_server.seed("active_project('resync', funded=True)")
    milestone_id = data["milestone_ids"][0]
    status = f'[data-milestone-status="{milestone_id}"]'
    watched = new_page(tolerated=("WebSocket connection to", "net::ERR_CONNECTION_REFUSED"))
    page = watched.page
    login(page, data["homeowner"], data["password"])
    page.goto(f"/projects/{data['project_id']}/")
    wait_online(page)
    mark_page(page)

    portal_server.stop()
    expect(page.locator("#connection")).not_to_have_attribute("data-state", "online")
    portal_server.seed(f"submit({milestone_id})")
    pruned = portal_server.seed("prune_replay()")["pruned_through_id"]
    portal_server.start()

    # The server answers the resume with resync_required; the page reloads its regions.
    wait_online(page)
    expect(page.locator(status)).to_have_text("Work submitted", timeout=LIVE_TIMEOUT)
    expect(page.locator("body")).to_have_attribute(
        "data-last-event-id", re.compile(r"^\d+$"), timeout=LIVE_TIMEOUT
    )
    assert int(page.locator("body").get_attribute("data-last-event-id")) >= pruned
    assert_not_reloaded(page)
    assert watched.errors == []


def test_the_api_docs_page_renders_under_the_strict_policy(portal_server, new_page):
    """Swagger UI (served from the sidecar package) renders the schema under the site's CSP
    with no violation: Chromium reports a refused script, style or connection as a console
    error, which Watched collects."""
    violations = []
    watched = new_page()
    page = watched.page
    page.on(
        "console",
        lambda message: (
            "Content Security Policy" in message.text and violations.append(message.text)
        ),
    )

    response = page.goto("/api/v1/docs/")
    assert "script-src 'self';" in response.headers["content-security-policy"]
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Escrow payments API")
    expect(page.locator(".opblock").first).to_be_visible()
    screenshot(page, "api-docs")
    assert violations == [] and watched.errors == []


def test_escape_and_cancel_close_a_confirmation_and_do_nothing(portal_server, new_page):
    """Issue 16: a confirmation box closes with Escape and with its Cancel button; the
    milestone is not funded either way, and the focus is back on the button that opened it."""
    data = portal_server.seed("active_project('escape')")
    milestone_id = data["milestone_ids"][0]
    page = new_page().page
    login(page, data["homeowner"], data["password"])
    page.goto(f"/projects/{data['project_id']}/")
    wait_online(page)
    box = page.locator(f"#confirm-{milestone_id}-fund")

    box.locator("summary").click()
    expect(box).to_have_attribute("open", "")
    page.keyboard.press("Escape")
    expect(box).not_to_have_attribute("open", "")
    expect(box.locator("summary")).to_be_focused()

    box.locator("summary").click()
    box.get_by_role("button", name="Cancel").click()
    expect(box).not_to_have_attribute("open", "")

    page.reload()
    expect(page.locator(f'[data-milestone-status="{milestone_id}"]')).to_have_text(
        "Awaiting funding"
    )
