"""3-D Secure in a real Chromium against a real Daphne on the sandbox gateway: the homeowner
funds with the card that asks for it, is shown the challenge, passes it on the sandbox's page,
comes back, and both windows see the milestone funded live; failing it instead leaves the
milestone open for funding again."""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import accessibility_problems, login, screenshot, wait_online

pytestmark = pytest.mark.browser

LIVE_TIMEOUT = 20_000
CARD = "Visa •••• 3184 (asks for 3-D Secure, which you pass or fail)"


def add_card_and_fund(home, project_url: str, milestone_id: int, amount: str) -> None:
    home.goto("/payment-methods/")
    home.get_by_label(CARD).check()
    home.get_by_role("button", name="Add card").click()
    expect(home.locator("#methods-live")).to_contain_text("visa •••• 3184")
    home.goto(project_url)
    wait_online(home)
    home.locator(f"#confirm-{milestone_id}-fund summary").click()
    home.get_by_role("button", name=f"Yes, pay {amount}").click()
    expect(home.get_by_text("Your bank asks you to confirm the payment")).to_be_visible()


def test_passing_3d_secure_in_the_browser_funds_the_milestone(portal_server, new_page):
    data = portal_server.seed("active_project('threeds_pass')")
    milestone_id = data["milestone_ids"][0]
    project_url = f"/projects/{data['project_id']}/"
    status = f'[data-milestone-status="{milestone_id}"]'
    home_w, pro_w = new_page(), new_page()
    home, pro = home_w.page, pro_w.page
    login(home, data["homeowner"], data["password"])
    login(pro, data["contractor"], data["password"])
    pro.goto(project_url)
    wait_online(pro)

    add_card_and_fund(home, project_url, milestone_id, "2,500.00 USD")
    challenge = home.get_by_role("link", name="Complete 3-D Secure")
    expect(challenge).to_be_visible()
    expect(pro.locator(status)).to_have_text("Funding in progress", timeout=LIVE_TIMEOUT)
    expect(pro.get_by_role("link", name="Complete 3-D Secure")).to_have_count(0)
    assert accessibility_problems(home) == []
    screenshot(home, "three-d-secure-offered")

    challenge.click()
    expect(home.get_by_role("heading", name="3-D Secure check")).to_be_visible()
    expect(home.get_by_text("2,500.00 USD")).to_be_visible()
    assert accessibility_problems(home) == []
    screenshot(home, "three-d-secure-sandbox-page")
    home.get_by_role("button", name="Complete the check").click()

    expect(home).to_have_url(re.compile(rf"{re.escape(project_url)}#milestone-{milestone_id}$"))
    expect(home.locator(status)).to_have_text("Funded (in escrow)", timeout=LIVE_TIMEOUT)
    expect(pro.locator(status)).to_have_text("Funded (in escrow)", timeout=LIVE_TIMEOUT)
    expect(home.get_by_role("link", name="Complete 3-D Secure")).to_have_count(0)
    assert home_w.errors == [] and pro_w.errors == []


def test_failing_3d_secure_in_the_browser_leaves_the_milestone_open(portal_server, new_page):
    data = portal_server.seed("active_project('threeds_fail')")
    milestone_id = data["milestone_ids"][0]
    project_url = f"/projects/{data['project_id']}/"
    status = f'[data-milestone-status="{milestone_id}"]'
    home_w = new_page()
    home = home_w.page
    login(home, data["homeowner"], data["password"])

    add_card_and_fund(home, project_url, milestone_id, "2,500.00 USD")
    home.get_by_role("link", name="Complete 3-D Secure").click()
    home.get_by_role("button", name="Fail the check").click()

    expect(home.locator(status)).to_have_text("Awaiting funding", timeout=LIVE_TIMEOUT)
    failure = "Failed: The provided PaymentMethod has failed authentication."
    expect(home.get_by_text(failure, exact=True)).to_be_visible(timeout=LIVE_TIMEOUT)
    # The timeline says it in words too.
    expect(home.get_by_text("USD failed: The provided PaymentMethod").first).to_be_visible()
    expect(home.locator(f"#confirm-{milestone_id}-fund summary")).to_be_visible()
    screenshot(home, "three-d-secure-failed")
    assert home_w.errors == []
