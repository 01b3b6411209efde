"""The web dashboard in a real browser: Debian's headless Chromium driven by
Selenium through Debian's chromium-driver, against the real agentd (real
sandboxes, real SQLite) and the real LiteLLM Gateway in front of the
scripted model.

Every page the tests visit is loaded with name resolution for any host but
127.0.0.1 disabled, and the browser's network log is checked: the dashboard
never asks for anything that is not agentd's.  Screenshots of the main pages
go to $AGENTD_ARTIFACTS (default .build/test-artifacts/dashboard).
"""
import json
import os
import shutil
import tempfile
import time

import pytest
import requests

from conftest import LITELLM_KEY, REPO

from selenium import webdriver  # noqa: E402  (Tests/e2e/requirements.txt)
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = os.environ.get("AGENTD_ARTIFACTS", os.path.join(REPO, ".build", "test-artifacts", "dashboard"))


@pytest.fixture
def dash(make_daemon, litellm):
    d = make_daemon(env={"AGENTD_GATEWAY_URL": litellm, "AGENTD_GATEWAY_KEY": LITELLM_KEY})
    return d


class Browser:
    """One headless Chromium with its own profile and download directory."""

    def __init__(self, base):
        assert os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER), \
            "chromium and chromium-driver are installed by scripts/deps test"
        self.base = base
        self.profile = tempfile.mkdtemp(prefix="agentd-chromium-")
        self.downloads = tempfile.mkdtemp(prefix="agentd-downloads-")
        o = webdriver.ChromeOptions()
        o.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,900", f"--user-data-dir={self.profile}",
                    "--no-first-run", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-default-apps",
                    # Nothing but agentd can be reached: any other host fails to resolve.
                    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
            o.add_argument(arg)
        o.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        o.add_experimental_option("prefs", {"download.default_directory": self.downloads,
                                            "download.prompt_for_download": False})
        # An explicit driver path: Selenium Manager (which downloads drivers) never runs.
        self.driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=o)
        self.driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": self.downloads})
        self.requested = []

    def close(self):
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)
            shutil.rmtree(self.downloads, ignore_errors=True)

    # -- helpers ---------------------------------------------------------------
    def open(self, fragment=""):
        self.driver.get(f"{self.base}/ui/{fragment}")

    def wait(self, cond, timeout=20):
        # A condition that read an element the page has since redrawn is
        # tried again, not a failure (views redraw when their data arrives).
        return WebDriverWait(self.driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(cond)

    def find(self, css, timeout=20):
        return self.wait(EC.visibility_of_element_located((By.CSS_SELECTOR, css)), timeout)

    def text_in(self, css, text, timeout=20):
        try:
            return self.wait(EC.text_to_be_present_in_element((By.CSS_SELECTOR, css), text), timeout)
        except TimeoutException:
            els = self.driver.find_elements(By.CSS_SELECTOR, css)
            raise AssertionError(f"{text!r} never appeared in {css}: {[e.text for e in els]}")

    def stable(self, action, tries=10):
        """Run `action` again when the page redrew the element it used (the
        sandbox and files panels refresh themselves)."""
        for i in range(tries):
            try:
                return action()
            except StaleElementReferenceException:
                if i == tries - 1:
                    raise
                time.sleep(0.2)

    def field(self, label):
        """The form control labelled `label` (as a user would find it)."""
        lab = self.wait(EC.presence_of_element_located((By.XPATH, f"//label[normalize-space(.)='{label}']")))
        return self.driver.find_element(By.ID, lab.get_attribute("for"))

    def click(self, text, tag="button"):
        def press():
            el = self.wait(EC.element_to_be_clickable((By.XPATH, f"//{tag}[normalize-space(.)='{text}']")))
            el.click()
            return el
        return self.stable(press)

    def sign_in(self, key):
        self.open()
        self.field("API key").send_keys(key)
        self.click("Sign in")
        self.find("#nav .who")

    def shot(self, name):
        os.makedirs(ARTIFACTS, exist_ok=True)
        self.driver.execute_script("window.scrollTo(0, 0)")
        self.driver.save_screenshot(os.path.join(ARTIFACTS, name + ".png"))

    def assert_accessible(self):
        """Every visible form control has a label, every button and link a
        name, and the page does not scroll sideways."""
        problems = self.driver.execute_script("""
            const out = [];
            const visible = el => el.offsetParent !== null && el.type !== "hidden";
            for (const el of document.querySelectorAll("input, select, textarea"))
                if (visible(el) && !(el.labels && el.labels.length) && !el.getAttribute("aria-label"))
                    out.push("unlabelled " + el.outerHTML.slice(0, 80));
            for (const el of document.querySelectorAll("button, a[href]"))
                if (visible(el) && !el.textContent.trim() && !el.getAttribute("aria-label"))
                    out.push("nameless " + el.outerHTML.slice(0, 80));
            if (document.documentElement.scrollWidth > window.innerWidth + 1) {
                const wide = [...document.querySelectorAll("body *")]
                    .filter(el => el.getBoundingClientRect().right > window.innerWidth + 1)
                    .map(el => el.tagName.toLowerCase() + "." + el.className);
                out.push("scrolls sideways: " + document.documentElement.scrollWidth + " > " + window.innerWidth
                         + " (" + wide.slice(0, 8).join(", ") + ")");
            }
            return out;""")
        assert not problems, f"{self.driver.current_url}: {problems}"

    def network_log(self):
        """URLs the pages asked for since the last call (from the DevTools log)."""
        for entry in self.driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg.get("method") == "Network.requestWillBeSent":
                p = msg["params"]
                self.requested.append((p.get("documentURL", ""), p["request"]["url"]))
        return self.requested

    def assert_only_agentd(self):
        """Our pages asked for nothing but agentd's own URLs, and nothing in
        the browser went to the network elsewhere (the browser's own
        chrome:// pages, like the first new tab, are not ours)."""
        log = self.network_log()
        ours = [u for doc, u in log if doc.startswith(self.base + "/")]
        assert len(ours) >= 5, f"too few requests logged for the check to mean anything: {ours}"
        foreign = [u for u in ours if not (u.startswith(self.base + "/") or u.startswith("data:"))]
        assert not foreign, f"the dashboard requested other hosts: {foreign}"
        network = [u for _, u in log if u.split(":")[0] in ("http", "https", "ws", "wss")]
        elsewhere = [u for u in network if not u.startswith(self.base + "/")]
        assert not elsewhere, f"the browser went elsewhere: {elsewhere}"


@pytest.fixture
def browser(dash):
    made = []

    def make():
        b = Browser(f"http://127.0.0.1:{dash.port}")
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def team_with_keys(api, name, roles=("owner", "member")):
    team = api.post("/v1/teams", {"name": name})
    keys = {r: api.post("/v1/keys", {"name": f"{name}-{r}", "team_id": team["id"], "role": r}) for r in roles}
    return team, keys


def test_dashboard_end_to_end(dash, browser):
    """Sign in, create an agent (with the API's validation message on bad
    input), start a session, talk to the agent and watch the answer stream
    in, run a command, upload and download a file; every request stays on
    agentd."""
    api = dash.api
    _, keys = team_with_keys(api, "alpha")
    b = browser()

    # Signing in with a wrong key says so and stays on the sign-in page.
    b.open()
    b.field("API key").send_keys("agentd_not-a-real-key")
    b.click("Sign in")
    b.text_in(".form-error", "not valid")
    b.shot("01-sign-in")
    b.assert_accessible()
    # Keyboard only: the key field has focus; typing and Enter signs in.
    # (WebDriver's clear() blurs the field, so focus is checked first.)
    key_input = b.field("API key")
    focused = b.driver.switch_to.active_element
    assert focused.get_attribute("name") == "key", focused.get_attribute("outerHTML")
    key_input.clear()
    key_input.send_keys(keys["owner"]["key"] + Keys.ENTER)
    assert "alpha · owner" in b.stable(lambda: b.find("#nav .who").text)
    b.text_in("main h1", "Overview")
    b.text_in("main", "cgroup driver")
    b.text_in("main", "(reachable)")
    b.assert_accessible()
    b.shot("02-overview")

    # Agents: the API's own validation message, then a real agent.
    b.open("#/agents/new")
    b.field("Name").send_keys("bad name!")
    b.field("Model (at the gateway)").send_keys("test-model")
    Select(b.field("Image")).select_by_value("minimal")
    b.click("Create agent")
    b.text_in(".form-error", "name")
    assert b.field("Name").get_attribute("aria-invalid") == "true"
    b.field("Name").clear()
    b.field("Name").send_keys("writer")
    b.field("Memory (MiB)").send_keys("128")
    b.click("Create agent")
    b.text_in("#notice", "Agent writer saved.")
    agents = api.with_key(keys["member"]["key"]).get("/v1/agents")["data"]  # the team's, seen by its member
    assert [a["name"] for a in agents] == ["writer"] and agents[0]["sandbox"]["memory_mb"] == 128
    b.open("#/agents")
    b.text_in("main table", "writer")
    b.assert_accessible()
    b.shot("03-agents")

    # A session, from the sessions page.
    b.open("#/sessions")
    Select(b.find("form:not(.filters) select[name=agent_id]")).select_by_visible_text("writer")
    b.field("Title").send_keys("dashboard demo")
    b.click("Start session")
    b.wait(lambda d: "#/sessions/ses_" in d.current_url, 30)
    sid = b.driver.current_url.split("#/sessions/")[1]
    b.text_in("#sandbox-state", "running", 60)

    # Talk to the agent: the answer streams in word by word (deltas shown
    # live), then the complete message lands in the transcript.
    b.field("Message").send_keys("slowstream, from the dashboard")
    b.click("Send")
    b.text_in(".transcript .user", "slowstream, from the dashboard")
    live = b.wait(EC.visibility_of_element_located((By.CSS_SELECTOR, ".assistant.live")), 30)
    partial = live.text
    assert partial.startswith("word0") and "word39" not in partial, partial
    b.text_in(".transcript .assistant", "word39", 60)
    assert not b.driver.find_element(By.CSS_SELECTOR, ".assistant.live").is_displayed()
    b.text_in("#run-state", "succeeded", 30)
    b.wait(lambda d: not b.stable(lambda: d.find_element(By.ID, "usage").text).startswith("0 tokens"), 20)

    # A run with tool calls: each call folds open to its result.
    b.field("Message").send_keys("build, from the dashboard")
    b.click("Send")
    b.text_in(".transcript", "All done.", 60)
    tools = b.driver.find_elements(By.CSS_SELECTOR, ".transcript .tool details")
    assert [t.find_element(By.TAG_NAME, "summary").text.split()[1] for t in tools] == ["exec", "write_file"]
    assert not tools[0].get_attribute("open"), "tool calls start folded"
    tools[0].find_element(By.TAG_NAME, "summary").click()
    assert "hello from exec" in tools[0].find_element(By.CSS_SELECTOR, "pre").text
    assert "$0.0" in b.stable(lambda: b.find("#usage").text)

    # A command's output streams into the command box.
    b.field("Command (run by /bin/sh in /workspace)").send_keys("echo from-the-box; echo to-stderr >&2; exit 3")
    b.click("Run")
    b.text_in("#exec-output", "[exit 3]", 30)
    out = b.stable(lambda: b.find("#exec-output").text)
    assert "from-the-box" in out and "to-stderr" in out

    # Upload a file, see it listed, download it back.
    src = os.path.join(b.downloads, "..", f"upload-{os.getpid()}.txt")
    src = os.path.abspath(src)
    with open(src, "w") as f:
        f.write("uploaded through the dashboard\n")
    try:
        b.driver.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(src)
        b.click("Upload")
        b.text_in("#notice", "Uploaded")
        name = os.path.basename(src)
        f = api.req("GET", f"/v1/sessions/{sid}/files/content", params={"path": "/workspace/" + name})
        assert f.status_code == 200 and f.text == "uploaded through the dashboard\n"
        b.stable(lambda: b.wait(EC.element_to_be_clickable((By.LINK_TEXT, name))).click())
        target = os.path.join(b.downloads, name)
        b.wait(lambda d: os.path.exists(target) and open(target).read() == "uploaded through the dashboard\n", 20)
    finally:
        os.unlink(src)
    b.assert_accessible()
    b.shot("04-session")
    # The same page on a phone: one column, nothing scrolls sideways.
    b.driver.set_window_size(390, 844)
    b.driver.refresh()
    b.text_in("#sandbox-state", "running", 30)
    b.text_in(".transcript .assistant", "word39", 30)
    b.assert_accessible()
    b.shot("04-session-phone")
    b.driver.set_window_size(1280, 900)

    # Keys page: a key is shown once; secrets show names only.
    b.open("#/secrets")
    b.text_in("main h1", "Secrets")
    b.field("Name").send_keys("GITHUB_TOKEN")
    b.field("Value").send_keys("never-shown-again")
    b.click("Set secret")
    b.text_in("main table", "GITHUB_TOKEN")
    assert "never-shown-again" not in b.driver.page_source
    b.assert_accessible()
    b.shot("05-secrets")
    b.open("#/keys")
    b.field("Name").send_keys("ci-bot")
    Select(b.field("Role")).select_by_value("member")
    b.click("Create key")
    created = b.stable(lambda: b.find("#created-key").text)
    assert created.startswith("agentd_")
    assert api.with_key(created).get("/v1/agents")["data"][0]["name"] == "writer"
    b.driver.refresh()
    b.text_in("main table", "ci-bot")
    assert created not in b.driver.page_source, "a key is shown once, never again"

    b.assert_only_agentd()
    # And the console holds no script error or CSP violation (failed
    # requests, like the 401 before signing in, are logged as "network").
    errors = [e for e in b.driver.get_log("browser") if e["level"] == "SEVERE" and e["source"] != "network"]
    assert not errors, "\n".join(e["message"] for e in errors)


def test_revoking_the_key_ends_the_dashboard_session(dash, browser):
    api = dash.api
    _, keys = team_with_keys(api, "beta", roles=("owner",))
    owner = api.with_key(keys["owner"]["key"])
    agent = owner.agent(name="viewer-target")
    sid = owner.session(agent["id"], title="watched")["id"]
    b = browser()
    b.sign_in(keys["owner"]["key"])
    b.open(f"#/sessions/{sid}")
    b.text_in("#sandbox-state", "running", 60)
    api.ok("DELETE", f"/v1/keys/{keys['owner']['id']}")
    # The page notices within its refresh interval and goes back to sign-in.
    b.text_in("#notice", "session ended", 20)
    assert b.driver.current_url.endswith("#/login")
    b.field("API key")
    b.shot("06-signed-out")
    # The cookie is dead on the server too, not just forgotten by the page.
    cookies = {c["name"]: c["value"] for c in b.driver.get_cookies()}
    if "agentd_ui" in cookies:
        r = requests.get(f"{b.base}/v1/sessions", cookies={"agentd_ui": cookies["agentd_ui"]}, timeout=10)
        assert r.status_code == 401
    b.assert_only_agentd()


def test_team_b_sees_nothing_of_team_a(dash, browser):
    api = dash.api
    _, a = team_with_keys(api, "team-a", roles=("owner", "viewer"))
    _, bkeys = team_with_keys(api, "team-b", roles=("member",))
    owner_a = api.with_key(a["owner"]["key"])
    agent = owner_a.agent(name="secret-agent-of-a")
    sid = owner_a.session(agent["id"], title="a-private-session")["id"]
    owner_a.ok("PUT", "/v1/secrets/A_TOKEN", json={"value": "hunter2"})

    b = browser()
    b.sign_in(bkeys["member"]["key"])
    for page, marker in (("#/agents", "No agents yet."), ("#/sessions", "No sessions match."),
                         ("#/secrets", "No secrets.")):
        b.open(page)
        b.text_in("main", marker)
        body = b.driver.find_element(By.TAG_NAME, "main").text
        assert "secret-agent-of-a" not in body and "a-private-session" not in body and "A_TOKEN" not in body
    # Straight to A's session by id: a clear "not found", nothing of A's.
    b.open(f"#/sessions/{sid}")
    b.text_in("main", "not found")
    assert "a-private-session" not in b.driver.find_element(By.TAG_NAME, "main").text
    # A member sees no admin pages.
    assert not b.driver.find_elements(By.LINK_TEXT, "Teams")
    b.shot("07-other-team")
    b.assert_only_agentd()

    # A viewer of team A sees A's agent and session but cannot change them.
    v = browser()
    v.sign_in(a["viewer"]["key"])
    v.open("#/agents")
    v.text_in("main table", "secret-agent-of-a")
    assert not v.driver.find_elements(By.LINK_TEXT, "New agent")
    assert not v.driver.find_elements(By.LINK_TEXT, "Secrets") and not v.driver.find_elements(By.LINK_TEXT, "API keys")
    v.open(f"#/sessions/{sid}")
    v.text_in("#sandbox-state", "running", 60)
    assert not v.driver.find_elements(By.XPATH, "//button[normalize-space(.)='Send']")
    assert not v.driver.find_elements(By.XPATH, "//button[normalize-space(.)='Run']")


def test_sign_in_cookie_and_csrf(dash):
    """The cookie's attributes and the checks a browser session must pass,
    from a plain HTTP client."""
    base = f"http://127.0.0.1:{dash.port}"
    key = dash.admin_key
    assert requests.get(base + "/", allow_redirects=False, timeout=10).headers["location"] == "/ui/"
    page = requests.get(base + "/ui/", timeout=10)
    assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
    assert requests.get(base + "/ui/app.js", timeout=10).headers["content-type"].startswith("text/javascript")

    # Login: JSON only (a cross-site form cannot send it), same origin only.
    assert requests.post(base + "/ui/login", data={"key": key}, timeout=10).status_code == 415
    r = requests.post(base + "/ui/login", json={"key": key}, headers={"Origin": "http://evil.example"}, timeout=10)
    assert r.status_code == 403
    bad = requests.post(base + "/ui/login", json={"key": "agentd_wrong"}, timeout=10)
    assert bad.status_code == 401 and bad.json()["error"]["field"] == "key" and "set-cookie" not in bad.headers
    s = requests.Session()
    r = s.post(base + "/ui/login", json={"key": key}, timeout=10)
    assert r.status_code == 200
    cookie = r.headers["set-cookie"]
    for attr in ("HttpOnly", "SameSite=Strict", "Path=/"):
        assert attr in cookie
    value = s.cookies["agentd_ui"]
    assert key not in cookie and len(value) >= 40
    me = r.json()
    assert me["identity"]["role"] == "admin" and me["identity"]["team_name"] == "admin" and me["csrf"]

    # Reads with the cookie alone; writes need the CSRF token (and same origin).
    assert s.get(base + "/v1/agents", timeout=10).status_code == 200
    assert s.post(base + "/v1/teams", json={"name": "nope"}, timeout=10).status_code == 403
    assert s.post(base + "/v1/teams", json={"name": "nope"}, headers={"X-CSRF-Token": "x" * 43},
                  timeout=10).status_code == 403
    r = s.post(base + "/v1/teams", json={"name": "cross"}, timeout=10,
               headers={"X-CSRF-Token": me["csrf"], "Origin": "http://evil.example"})
    assert r.status_code == 403
    r = s.post(base + "/v1/teams", json={"name": "via-dashboard"}, headers={"X-CSRF-Token": me["csrf"]}, timeout=10)
    assert r.status_code == 201

    # The sign-in survives a daemon restart (it is stored), and sign-out ends it.
    dash.restart()
    base = f"http://127.0.0.1:{dash.port}"
    assert s.get(base + "/ui/session", timeout=10).json()["csrf"] == me["csrf"]
    assert s.post(base + "/ui/logout", headers={"X-CSRF-Token": me["csrf"]}, timeout=10).status_code == 204
    assert requests.get(base + "/v1/agents", cookies={"agentd_ui": value}, timeout=10).status_code == 401
    # The database holds the cookie's hash, never the value.
    db = open(os.path.join(dash.state, "agentd.db"), "rb").read()
    assert value.encode() not in db


def test_sessions_page_is_paged_filtered_and_searched_on_the_server(dash, browser):
    api = dash.api
    _, keys = team_with_keys(api, "many", roles=("owner",))
    owner = api.with_key(keys["owner"]["key"])
    a1 = owner.agent(name="first-agent")
    a2 = owner.agent(name="second-agent")
    for i in range(30):
        owner.session(a1["id"], title=f"routine-{i:02d}")
    owner.session(a2["id"], title="the needle")
    b = browser()
    b.sign_in(keys["owner"]["key"])
    b.open("#/sessions")
    rows = lambda: b.driver.find_elements(By.CSS_SELECTOR, "main table tbody tr")  # noqa: E731
    b.wait(lambda d: len(rows()) == 25)
    b.stable(lambda: b.wait(EC.element_to_be_clickable((By.LINK_TEXT, "Next page"))).click())
    b.wait(lambda d: len(rows()) == 6)
    # Search by title.
    b.field("Title contains").send_keys("needle")
    b.click("Filter")
    b.wait(lambda d: len(rows()) == 1)
    b.text_in("main table", "the needle")
    # Filter by agent.
    b.open("#/sessions")
    b.stable(lambda: Select(b.find("form.filters select[name=agent]")).select_by_visible_text("second-agent"))
    b.click("Filter")
    b.wait(lambda d: len(rows()) == 1 and "second-agent" in rows()[0].text)
    b.shot("08-sessions")
    b.assert_accessible()


def test_agents_are_edited_and_deleted_with_the_apis_rules(dash, browser):
    api = dash.api
    _, keys = team_with_keys(api, "editors", roles=("owner",))
    owner = api.with_key(keys["owner"]["key"])
    busy = owner.agent(name="busy", system_prompt="old prompt")
    owner.session(busy["id"], title="keeps it busy")
    idle = owner.agent(name="idle")
    b = browser()
    b.sign_in(keys["owner"]["key"])

    # Edit: the form holds the agent; saving changes it.
    b.open(f"#/agents/{busy['id']}")
    prompt = b.field("System prompt")
    assert prompt.get_attribute("value") == "old prompt"
    prompt.clear()
    prompt.send_keys("new prompt")
    b.click("Save")
    b.text_in("#notice", "Agent busy saved.")
    assert owner.get(f"/v1/agents/{busy['id']}")["system_prompt"] == "new prompt"

    # Delete: refused with the API's message while the agent has sessions.
    b.click("Delete")
    b.wait(EC.alert_is_present()).accept()
    b.text_in(".form-error", "session")
    assert owner.req("GET", f"/v1/agents/{busy['id']}").status_code == 200

    # An agent without sessions goes.
    b.open(f"#/agents/{idle['id']}")
    b.text_in("main h1", "Agent idle")
    b.click("Delete")
    b.wait(EC.alert_is_present()).accept()
    b.text_in("#notice", "Agent idle deleted.")
    assert owner.req("GET", f"/v1/agents/{idle['id']}").status_code == 404
    b.text_in("main table", "busy")
    assert "idle" not in b.find("main table").text
    b.assert_only_agentd()


def test_team_quotas_page(dash, browser):
    """Admins see and set a team's quotas beside its usage; a member sees
    its own team's, without the form."""
    api = dash.api
    team, keys = team_with_keys(api, "quota-team", roles=("owner", "member"))
    owner = api.with_key(keys["owner"]["key"])
    api.with_key(keys["member"]["key"]).session(owner.agent(name="quota-agent")["id"])

    b = browser()
    b.sign_in(dash.admin_key)
    b.open("#/teams")
    b.click("quota-team", tag="a")
    b.text_in("main h1", "Team quota-team")
    b.text_in("main table", "Sessions")
    b.field("Sessions").send_keys("5")
    b.field("CPUs").send_keys("1.5")
    b.click("Save quotas")
    b.text_in("#notice", "Quotas saved.")
    q = api.get(f"/v1/teams/{team['id']}")["quotas"]
    assert q["sessions"] == 5 and q["cpus"] == 1.5 and q.get("memory_mb") is None, q
    # A value beyond the range: the API's message, on the field.
    b.field("Queued runs").send_keys("99999999999")
    b.click("Save quotas")
    b.text_in(".form-error", "queued_runs")
    assert b.field("Queued runs").get_attribute("aria-invalid") == "true"
    b.shot("09-team-quotas")
    b.assert_accessible()

    m = browser()
    m.sign_in(keys["member"]["key"])
    m.click("Team", tag="a")
    m.text_in("main table", "no limit")
    rows = m.find("main table").text
    assert "Sessions 1 5" in rows.replace("\n", " ") or "Sessions\n1\n5" in rows, rows
    assert not m.driver.find_elements(By.XPATH, "//button[normalize-space(.)='Save quotas']")
