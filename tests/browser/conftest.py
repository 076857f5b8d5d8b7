"""Browser tests: Playwright drives Debian's Chromium (/usr/bin/chromium, installed by
`make test`; never `playwright install`) against a real Daphne server.

The server is a child process on a free port with its own SQLite file, the in-memory channel
layer, eager Celery and the sandbox gateway, so it needs neither PostgreSQL nor Redis and
never touches another run's data. It dies with the test process (PR_SET_PDEATHSIG) and is
stopped by the fixture's teardown. Test data is created in its database by
`manage.py shell` (tests/browser/seed.py)."""

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PYTHON = sys.executable
DAPHNE = str(Path(sys.executable).with_name("daphne"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    # Linux: the server gets SIGTERM when the test process dies, however it dies.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class LiveServer:
    def __init__(self, workdir: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self.env = {
            key: value
            for key, value in os.environ.items()
            if key not in {"DATABASE_URL", "REDIS_URL", "PYTEST_XDIST_WORKER"}
        }
        self.env.update(
            {
                "DJANGO_SETTINGS_MODULE": "config.settings",
                "SQLITE_PATH": str(workdir / "browser.sqlite3"),
                "DEBUG": "true",
                "ALLOWED_HOSTS": "127.0.0.1,localhost",
                "CELERY_TASK_ALWAYS_EAGER": "true",
                "PAYMENT_GATEWAY": "sandbox",
                "SANDBOX_WEBHOOK_DELIVERY": "auto",
                "SANDBOX_WEBHOOK_DELAY": "0.3",
                "PYTHONUNBUFFERED": "1",
            }
        )

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [PYTHON, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr[-3000:]}")
        return result.stdout

    def seed(self, call: str) -> dict:
        """Run `tests.browser.seed.<call>` in the server's database; return its JSON line."""
        out = self.manage("shell", "-c", f"from tests.browser import seed; seed.{call}")
        return json.loads(out.strip().splitlines()[-1])

    def start(self) -> None:
        self.starts += 1
        ARTIFACTS.mkdir(exist_ok=True)
        log = open(ARTIFACTS / f"daphne-{self.port}-{self.starts}.log", "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            [DAPHNE, "-b", "127.0.0.1", "-p", str(self.port), "config.asgi:application"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daphne exited with {self.process.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("daphne did not answer /healthz within 30 s")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture(scope="module")
def portal_server(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing; `make test` installs Debian's chromium package")
    server = LiveServer(tmp_path_factory.mktemp("browser"))
    server.manage("migrate", "--noinput")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    """Module-scoped on purpose: Playwright's sync API keeps an event loop running in this
    thread while it is open, which would break the asyncio tests collected after this one."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Watched:
    """A page whose console errors and uncaught exceptions are collected."""

    def __init__(self, page, *, tolerated: tuple[str, ...] = ()):
        self.page = page
        self.errors: list[str] = []
        self.tolerated = tolerated
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        page.on("response", self._response)

    def _response(self, response) -> None:
        if response.status >= 400 and response.request.resource_type != "document":
            self.errors.append(f"HTTP {response.status}: {response.url}")

    def _console(self, message) -> None:
        if message.type == "error" and not any(t in message.text for t in self.tolerated):
            self.errors.append(f"console: {message.text}")


@pytest.fixture
def new_page(browser, portal_server):
    """Open a page in a fresh browser context (its own cookies): new_page() -> Watched."""
    contexts = []

    def make(*, tolerated: tuple[str, ...] = ()) -> Watched:
        context = browser.new_context(
            base_url=portal_server.url, viewport={"width": 1280, "height": 900}
        )
        context.set_default_timeout(15_000)
        contexts.append(context)
        return Watched(context.new_page(), tolerated=tolerated)

    yield make
    for context in contexts:
        context.close()


def login(page, username: str, password: str) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/")


def wait_online(page) -> None:
    page.wait_for_selector('#connection[data-state="online"]', timeout=15_000)


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


UNLABELLED_JS = """() => {
  const named = (el) => (el.labels && el.labels.length) || el.getAttribute("aria-label")
    || el.getAttribute("aria-labelledby") || el.getAttribute("title");
  const problems = [];
  for (const el of document.querySelectorAll("input, select, textarea")) {
    if (el.type === "hidden") continue;
    if (!named(el)) problems.push(`unlabelled ${el.tagName} ${el.name || el.id}`);
  }
  for (const el of document.querySelectorAll("button, a[href], summary")) {
    if (!(el.textContent.trim() || el.getAttribute("aria-label"))) {
      problems.push(`nameless ${el.tagName}`);
    }
  }
  for (const el of document.querySelectorAll("svg[role=img]")) {
    if (!el.querySelector("title") && !el.getAttribute("aria-label")) {
      problems.push("svg without title");
    }
  }
  const headings = [...document.querySelectorAll("h1")];
  if (headings.length !== 1) problems.push(`${headings.length} h1 elements`);
  if (!document.documentElement.lang) problems.push("no lang");
  return problems;
}"""


def accessibility_problems(page) -> list[str]:
    """Basic, mechanical checks: labels, accessible names, one h1, a page language."""
    return page.evaluate(UNLABELLED_JS)
