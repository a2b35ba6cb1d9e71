"""The operators' console in a real headless Chromium (Debian's package, driven by Playwright)
against a real worker, projector and API on the real broker and database.

Elements are found as a person finds them: by accessible role and name. The module's stack is
given demo-like data first (three tenants, their users and databases, two requests over quota,
a service request that hangs at a participant, a dead-lettered command); the tests then sign in,
find, follow live, act, redrive and bulk-retry, check what a tenant's token may see, refuse
forged cookies and cross-site posts, and take the README's screenshots (`docs/console/`).

No browser is downloaded: Chromium comes from `apt-get install chromium` (`make test` installs
it), and a missing browser fails these tests with that remedy; they are never skipped.
"""

from __future__ import annotations

import http.server
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from confluent_kafka.admin import AdminClient
from harness import undo_answered, wait_until
from test_api import ROUTING, SILENT, auth, make_token, running_stack, tenant_body

from api.auth import OPERATE, READ, RETRY, SUBMIT
from api.console.session import COOKIE, csrf_token
from consumer.participants.builtin.registry import add_entity
from producers.commands import CommandPublisher
from provisioning.devservices.signing_key import DevSigningKey
from provisioning.settings import Settings

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")  # never fetch a browser build
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright  # noqa: E402

CHROMIUM = Path(os.environ.get("PROVISIONING_TEST_CHROMIUM", "/usr/bin/chromium"))
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "console"
PREFIX = "/api/v1/provisioning"
OPERATOR = (READ, RETRY, OPERATE)
FIVE_TENANT_STEPS = ("validate-entity", "create-tenant", "setup-billing", "activate-services",
                     "create-admin-role")
expect.set_options(timeout=20_000)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: the console tests drive Debian's "
                    "Chromium. Install it with `apt-get install -y chromium` (as root; `make "
                    "test` does this), or point PROVISIONING_TEST_CHROMIUM at a Chromium binary.",
                    pytrace=False)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> DevSigningKey:
    return DevSigningKey(tmp_path_factory.mktemp("console-dev") / "auth").ensure()


@dataclass
class Demo:
    """The module's demo-like data, as the tests find it through the console."""

    url: str
    settings: Settings
    started: datetime
    tenants: dict[str, str] = field(default_factory=dict)  # name -> tenant id
    tenant_requests: dict[str, str] = field(default_factory=dict)  # name -> its requestId
    users: dict[str, str] = field(default_factory=dict)  # tenant name -> user requestId
    over_quota: list[str] = field(default_factory=list)  # FAILED resource requests (Initech)
    dead_letter_key: str = ""  # requestId of the dead-lettered user command


def operator_token(key: DevSigningKey) -> str:
    return make_token(key, subject="ops-grace", tenant="platform-ops", permissions=OPERATOR)


@pytest.fixture(scope="module")
def demo(base_settings: Settings, kafka_admin: AdminClient, migrated: sa.Engine,
         tmp_path_factory: pytest.TempPathFactory, signing_key: DevSigningKey
         ) -> Iterator[Demo]:
    settings = base_settings.model_copy(
        update={"topic_prefix": f"{base_settings.topic_prefix}.console{uuid.uuid4().hex[:8]}"})
    started = datetime.now(UTC) - timedelta(seconds=5)
    with running_stack(settings, kafka_admin, tmp_path_factory.mktemp("console"), signing_key,
                       routing=ROUTING, participants=(SILENT,)) as (url, _):
        data = Demo(url, settings, started)
        with httpx.Client(base_url=url, timeout=60) as client:
            _provision(client, signing_key, migrated, data)
        _dead_letter(settings, data)
        yield data


def _provision(client: httpx.Client, key: DevSigningKey, engine: sa.Engine, data: Demo) -> None:
    platform = auth(make_token(key))
    for name in ("Acme Widgets", "Globex", "Initech"):
        entity = f"console-{uuid.uuid4().hex[:8]}"
        add_entity(engine, entity, name)
        body = tenant_body(entity, tenantName=name, billingInfo={
            "accountName": name, "billingEmail": "billing@example.com", "currency": "EUR"})
        answer = client.post(f"{PREFIX}/tenant?wait=30", json=body, headers=platform).json()
        assert answer["status"] == "COMPLETED", answer
        data.tenants[name] = answer["resourceId"]
        data.tenant_requests[name] = answer["requestId"]
    for index, (name, tenant) in enumerate(data.tenants.items()):
        owner = auth(make_token(key, tenant=tenant), tenant)  # ada: the admin
        user = client.post(f"{PREFIX}/user?wait=30", headers=owner, json={
            "email": f"user{index}@example.com", "roleName": "member"}).json()
        assert user["status"] == "COMPLETED", user
        data.users[name] = user["requestId"]
        database = client.post(f"{PREFIX}/resource?wait=30", headers=owner, json={
            "serviceName": "CoreService", "resourceType": "DATABASE",
            "resourceSpec": {"sizeGb": "5", "name": f"orders{index}"}}).json()
        assert database["status"] == "COMPLETED", database
    initech = data.tenants["Initech"]
    owner = auth(make_token(key, tenant=initech), initech)
    for size in ("100000", "250000"):
        failed = client.post(f"{PREFIX}/resource?wait=30", headers=owner, json={
            "serviceName": "CoreService", "resourceType": "DATABASE",
            "resourceSpec": {"sizeGb": size}}).json()
        assert failed["status"] == "FAILED" and "quota" in failed["reason"], failed
        data.over_quota.append(failed["requestId"])


def _dead_letter(settings: Settings, data: Demo) -> None:
    """A user command with an e-mail address the worker refuses: dead-lettered."""
    command = {"requestId": str(uuid.uuid4()), "requestedBy": "ada", "replyTo": None,
               "requestedAt": int(time.time() * 1000), "tenantId": data.tenants["Globex"],
               "email": "grace.at.globex.example", "roleName": "member"}
    with CommandPublisher(settings) as publisher:
        publisher.publish("ProvisionUserRequest", command)
    data.dead_letter_key = command["requestId"]


def hung_service(demo: Demo, key: DevSigningKey, tenant_name: str) -> str:
    """A service request that waits at set-rate-limits: its participant never answers."""
    tenant = demo.tenants[tenant_name]
    with httpx.Client(base_url=demo.url, timeout=30) as client:
        owner = auth(make_token(key, tenant=tenant), tenant)
        request_id = client.post(f"{PREFIX}/service", headers=owner, json={
            "serviceName": "CartService", "slaTier": "GOLD"}).json()["requestId"]

        def waiting() -> bool:
            status = client.get(f"{PREFIX}/{request_id}/status", headers=owner).json()
            return status["currentStep"] == "set-rate-limits"

        wait_until(waiting, 30, "the service request waiting at set-rate-limits")
    return request_id


def status_in_db(engine: sa.Engine, request_id: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT status FROM provisioning_requests "
                                    "WHERE request_id = :id"), {"id": request_id}).scalar()


def signed_in(browser: Browser, url: str, token: str) -> tuple[BrowserContext, Page]:
    """A new browser context (its own cookies) with a page signed in to the console."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    sign_in(page, url, token)
    return context, page


def sign_in(page: Page, url: str, token: str) -> None:
    page.goto(f"{url}/console")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_role("textbox", name="Bearer token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Requests", exact=True)).to_be_visible()


def find_by_request_id(page: Page, request_id: str) -> None:
    filters = page.get_by_role("search", name="Filter requests")
    filters.get_by_role("textbox", name="Request id").fill(request_id)
    filters.get_by_role("button", name="Apply filters").click()
    table = page.get_by_role("table", name=re.compile("^Requests"))
    expect(table.get_by_role("row")).to_have_count(2)  # the header and the one request
    table.get_by_role("link", name=request_id).click()
    expect(page.get_by_role("heading", name=f"Request {request_id}")).to_be_visible()


def timeline(page: Page, run: int = 1):  # noqa: ANN201 - a Playwright locator
    return page.get_by_role("list", name=re.compile(rf"^Timeline of run {run}:"))


def shoot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


# --- the tests --------------------------------------------------------------------------------


def test_an_operator_signs_in_finds_a_request_by_id_and_sees_its_five_steps(
    browser: Browser, demo: Demo, signing_key: DevSigningKey
) -> None:
    context, page = signed_in(browser, demo.url, operator_token(signing_key))
    cookie = next(c for c in context.cookies() if c["name"] == COOKIE)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    assert cookie["expires"] == -1  # a session cookie: it ends with the browser

    request_id = demo.tenant_requests["Globex"]
    find_by_request_id(page, request_id)
    expect(page.get_by_role("status", name="Request status")).to_have_text("COMPLETED")
    chart = timeline(page)
    expect(chart).to_be_visible()
    completed = chart.get_by_role("listitem", name=re.compile(r"attempt 1: completed in"))
    expect(completed).to_have_count(5)
    names = [completed.nth(i).get_attribute("aria-label") or "" for i in range(5)]
    assert [n.split(",")[0] for n in names] == list(FIVE_TENANT_STEPS)
    audit = page.get_by_role("table", name="Every event of the request, in order")
    expect(audit.get_by_role("row").filter(has_text="Succeeded")).to_have_count(1)
    expect(page.get_by_role("heading", name="Actions")).to_be_visible()

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert not [c for c in context.cookies() if c["name"] == COOKIE]
    page.goto(f"{demo.url}/console/requests")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    context.close()


def test_cancelling_a_hung_saga_shows_it_fail_with_its_compensations_live(
    browser: Browser, demo: Demo, signing_key: DevSigningKey, migrated: sa.Engine,
    capsys: pytest.CaptureFixture[str],
) -> None:
    request_id = hung_service(demo, signing_key, "Acme Widgets")
    context, page = signed_in(browser, demo.url, operator_token(signing_key))
    find_by_request_id(page, request_id)
    expect(page.get_by_role("status", name="Request status")).to_have_text("IN_PROGRESS")
    expect(timeline(page).get_by_role("listitem", name=re.compile(
        r"^set-rate-limits, attempt 1: running"))).to_have_count(1)

    page.get_by_role("textbox", name="Reason to cancel request").fill("wrong tier")
    page.get_by_role("button", name="Cancel request").click()
    expect(page.get_by_role("status").filter(has_text="Cancel request: sent")).to_be_visible()
    page.evaluate("window.notReloaded = true")
    expect(page.locator("html[data-live=connected]")).to_have_count(1)

    # When the projection turns FAILED, to the hundredth of a second, against when the page did
    seen_in_db: list[float] = []

    def watch_projection() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if status_in_db(migrated, request_id) == "FAILED":
                seen_in_db.append(time.time() * 1000)
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=watch_projection, daemon=True)
    watcher.start()
    # Answer the participant's undo of the cancelled step; the page is left alone meanwhile.
    undo_answered(demo.settings, SILENT, "set-rate-limits", lambda: bool(seen_in_db), 30,
                  "the cancelled request failing")
    expect(page.get_by_role("status", name="Request status")).to_have_text("FAILED")
    assert page.evaluate("window.notReloaded") is True  # updated in place, not reloaded
    updated_at = float(page.evaluate("document.documentElement.dataset.liveUpdatedAt"))
    with capsys.disabled():
        print(f"\nconsole: the page showed FAILED {updated_at - seen_in_db[0]:.0f} ms after the "
              "row changed in the projection (looked for every 10 ms)")

    undone = timeline(page).get_by_role("listitem", name=re.compile(r"^undo .*: compensated"))
    expect(undone).to_have_count(3)
    lanes = [(undone.nth(i).get_attribute("aria-label") or "").split(",")[0] for i in range(3)]
    assert lanes == ["undo set-rate-limits", "undo init-resources", "undo create-subscription"]
    expect(timeline(page).get_by_role("listitem", name="CANCEL by ops-grace: wrong tier")
           ).to_have_count(1)
    expect(page.get_by_text("cancelled by ops-grace: wrong tier").first).to_be_visible()
    expect(page.get_by_role("button", name="Cancel request")).to_have_count(0)
    expect(page.get_by_role("button", name="Retry request")).to_have_count(1)
    shoot(page, "request")
    context.close()


def test_an_operator_fixes_a_dead_letter_and_sends_it_again(
    browser: Browser, demo: Demo, signing_key: DevSigningKey
) -> None:
    context, page = signed_in(browser, demo.url, operator_token(signing_key))
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Dead letters").click()
    letters = page.get_by_role("table", name="Dead-lettered commands")
    row = letters.get_by_role("row").filter(has_text=demo.dead_letter_key)
    expect(row).to_have_count(1)
    expect(row).to_contain_text("email")  # the reason names the field
    shoot(page, "dead-letters")
    row.get_by_role("link", name=re.compile(r"^Dead letter \d+:\d+$")).click()
    expect(page.get_by_role("heading", name=re.compile(r"^Dead letter \d+:\d+$"))).to_be_visible()
    expect(page.get_by_role("region", name="Decoded command")).to_contain_text(
        "grace.at.globex.example")

    page.get_by_role("textbox", name="email", exact=True).fill("grace@@globex")
    page.get_by_role("button", name="Send again").click()
    expect(page.get_by_role("alert")).to_contain_text("Not sent again")  # still invalid
    page.get_by_role("textbox", name="email", exact=True).fill("grace@globex.example")
    shoot(page, "dead-letter")
    page.get_by_role("button", name="Send again").click()
    expect(page.get_by_role("status")).to_contain_text(
        f"sent again as request {demo.dead_letter_key}")

    page.get_by_role("link", name=f"Follow request {demo.dead_letter_key}").click()
    expect(page.get_by_role("status", name="Request status")).to_have_text("COMPLETED")
    expect(page.get_by_text("grace@globex.example").first).to_be_visible()
    context.close()


def test_an_operator_bulk_retries_the_two_failed_requests_of_a_filter(
    browser: Browser, demo: Demo, signing_key: DevSigningKey, migrated: sa.Engine
) -> None:
    context, page = signed_in(browser, demo.url, operator_token(signing_key))
    filters = page.get_by_role("search", name="Filter requests")
    filters.get_by_role("combobox", name="Status").select_option("FAILED")
    filters.get_by_role("textbox", name="Tenant").fill(demo.tenants["Initech"])
    filters.get_by_role("button", name="Apply filters").click()
    expect(page.get_by_role("table", name=re.compile("^Requests")).get_by_role("row")
           ).to_have_count(3)
    page.get_by_role("link", name="Retry the failed ones…").click()
    expect(page.get_by_role("status")).to_contain_text("2 requests will get a retry")
    shoot(page, "bulk-retry")
    page.get_by_role("textbox", name="Reason to retry them").fill("quota raised")
    page.get_by_role("button", name="Retry 2 requests").click()
    expect(page.get_by_role("heading", name="Retry: 2 sent")).to_be_visible()

    with httpx.Client(base_url=demo.url, timeout=30) as client:
        operator = auth(operator_token(signing_key), "platform-ops")
        for request_id in demo.over_quota:
            def second_run_over(request_id: str = request_id) -> dict | None:
                status = client.get(f"{PREFIX}/{request_id}/status", headers=operator).json()
                return status if status["run"] == 2 and status["finishedAt"] else None

            status = wait_until(second_run_over, 30, "the retried request's second run")
            assert status["status"] == "FAILED" and "quota" in status["reason"]  # still over
            trail = client.get(f"{PREFIX}/{request_id}/events", headers=operator).json()
            actions = [e["details"] for e in trail["events"]
                       if e["type"] == "ProvisioningOperatorAction"]
            assert actions == [{"operator": "ops-grace", "action": "RETRY",
                                "reason": "quota raised"}]
    page.goto(f"{demo.url}/console/requests/{demo.over_quota[0]}")
    expect(page.get_by_role("navigation", name="Runs").get_by_role("link")).to_have_count(2)
    context.close()


def test_a_tenants_token_sees_only_its_tenant_and_gets_no_actions(
    browser: Browser, demo: Demo, signing_key: DevSigningKey
) -> None:
    globex = demo.tenants["Globex"]
    token = make_token(signing_key, subject="globex-svc", tenant=globex,
                       permissions=(SUBMIT, READ, RETRY))
    context, page = signed_in(browser, demo.url, token)
    nav = page.get_by_role("navigation", name="Console")
    expect(nav.get_by_role("link", name="Dead letters")).to_have_count(0)
    expect(page.get_by_role("textbox", name="Tenant")).to_have_count(0)
    expect(page.get_by_role("link", name="Retry the failed ones…")).to_have_count(0)
    table = page.get_by_role("table", name=re.compile("^Requests"))
    rows = table.get_by_role("row")
    tenants = {rows.nth(i).get_by_role("cell").nth(2).inner_text()
               for i in range(1, rows.count())}
    assert tenants == {globex}

    for other in (demo.users["Acme Widgets"], demo.over_quota[0]):
        filters = page.get_by_role("search", name="Filter requests")
        filters.get_by_role("textbox", name="Request id").fill(other)
        filters.get_by_role("button", name="Apply filters").click()
        expect(table.get_by_role("row")).to_have_count(2)  # the header, "No request matches."
        expect(table).to_contain_text("No request matches.")
        page.goto(f"{demo.url}/console/requests/{other}")
        expect(page.get_by_role("heading", name="Not found")).to_be_visible()
        page.goto(f"{demo.url}/console/requests")

    find_by_request_id(page, demo.users["Globex"])
    expect(page.get_by_role("status", name="Request status")).to_have_text("COMPLETED")
    expect(page.get_by_role("heading", name="Actions")).to_have_count(0)
    expect(page.get_by_role("button")).to_have_count(1)  # Sign out, nothing else
    page.goto(f"{demo.url}/console/dead-letters")
    expect(page.get_by_role("heading", name="Refused")).to_be_visible()
    context.close()


class AttackerSite:
    """A page of another site (localhost, while the console is on 127.0.0.1) whose form posts
    to the console as soon as it loads."""

    def __init__(self, target: str) -> None:
        body = (f'<!doctype html><form method="post" action="{target}">'
                '<input name="reason" value="pwned"><input name="csrf" value="guess"></form>'
                "<script>document.forms[0].submit()</script>").encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://localhost:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_a_forged_cookie_and_cross_site_posts_are_refused(
    browser: Browser, demo: Demo, signing_key: DevSigningKey, migrated: sa.Engine,
    tmp_path: Path,
) -> None:
    request_id = hung_service(demo, signing_key, "Initech")
    cancel = f"{demo.url}/console/requests/{request_id}/actions/cancel"

    # A cookie holding a token signed by another key: no session, the sign-in page instead
    forged = make_token(DevSigningKey(tmp_path / "other").ensure(), subject="mallory",
                        tenant="platform-ops", permissions=OPERATOR)
    context = browser.new_context()
    context.add_cookies([{"name": COOKIE, "value": forged, "domain": "127.0.0.1",
                          "path": "/console"}])
    page = context.new_page()
    page.goto(f"{demo.url}/console/requests")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("The token was refused")
    context.close()
    with httpx.Client(timeout=30) as client:
        refused = client.post(cancel, data={"reason": "x", "csrf": "x"},
                              headers={"Cookie": f"{COOKIE}={forged}"})
        assert refused.status_code == 401 and "The token was refused" in refused.text

        # A real session, but posts without this session's CSRF token or from another origin
        real = operator_token(signing_key)
        for headers, data, why in [
            ({}, {"reason": "x"}, "CSRF token"),
            ({}, {"reason": "x", "csrf": "guess"}, "CSRF token"),
            ({"Origin": "http://evil.example"}, {"reason": "x", "csrf": csrf_token(real)},
             "another origin"),
            ({"Sec-Fetch-Site": "cross-site"}, {"reason": "x", "csrf": csrf_token(real)},
             "another site"),
        ]:
            answer = client.post(cancel, data=data,
                                 headers={**headers, "Cookie": f"{COOKIE}={real}"})
            assert answer.status_code == 403 and why in answer.text, answer.text

    # A signed-in operator's browser opens another site's page that posts to the console
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, demo.url, operator_token(signing_key))
    attacker = AttackerSite(cancel)
    try:
        page.goto(attacker.url)
        expect(page.get_by_role("heading", name="Refused")).to_be_visible()
        expect(page.get_by_role("alert")).to_contain_text("another site")
    finally:
        attacker.close()
    time.sleep(1.0)
    assert status_in_db(migrated, request_id) == "IN_PROGRESS"  # nothing was cancelled
    context.close()


def test_screenshots_of_the_requests_and_the_overview(
    browser: Browser, demo: Demo, signing_key: DevSigningKey
) -> None:
    """The README's pictures, from this module's demo-like data (the requests table filtered to
    the time it ran; the overview is the whole projection of the last hour)."""
    context, page = signed_in(browser, demo.url, operator_token(signing_key))
    since = demo.started.strftime("%Y-%m-%dT%H:%M:%S")
    page.goto(f"{demo.url}/console/requests?since={since}")
    expect(page.get_by_role("table", name=re.compile("^Requests"))).to_be_visible()
    shoot(page, "requests")
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Overview").click()
    expect(page.get_by_role("img", name=re.compile("^Requests per minute"))).to_be_visible()
    expect(page.get_by_role("img", name=re.compile("^Success rate per workflow"))).to_be_visible()
    expect(page.get_by_role("img", name=re.compile("^p95 duration per workflow"))).to_be_visible()
    expect(page.get_by_role("img", name=re.compile("^Requests in flight by step"))).to_be_visible()
    shoot(page, "overview")
    page.goto(f"{demo.url}/console/sign-in")
    shoot(page, "sign-in")
    context.close()
