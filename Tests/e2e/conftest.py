"""End-to-end harness: the real agentd binary on a temporary state directory,
driven over HTTP (requests) and through the real agentctl, as a user would.

Each daemon gets its own state directory, cgroup parent and port; at the end
everything it left (sandboxes keep running across daemon restarts by design)
is killed and removed, and the test checks no cgroup is left.
"""
import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest
import requests

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("AGENTD_BUILD", os.path.join(REPO, ".build", "debug"))
AGENTD = os.path.join(BUILD, "agentd")
AGENTCTL = os.path.join(BUILD, "agentctl")
CGROUP_ROOTS = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] + [
    f"/sys/fs/cgroup/{c}" for c in ("memory", "pids", "cpu", "cpuacct", "freezer")]


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory):
    """The minimal image (busybox), built once, with the probe inside."""
    d = tmp_path_factory.mktemp("images")
    out = os.path.join(d, "minimal")
    subprocess.run([os.path.join(REPO, "rootfs", "build"), "minimal", "--out", out], check=True,
                   stdout=subprocess.DEVNULL)
    shutil.copy(os.path.join(BUILD, "agentd-probe"), os.path.join(out, "bin", "agentd-probe"))
    return out


def kill_cgroup_tree(name):
    """Kill every process under cgroup parent `name` in every hierarchy and remove it.
    Frozen cgroups (paused sandboxes) are thawed first: a frozen process
    cannot die, and would be left behind."""
    for root in CGROUP_ROOTS:
        top = os.path.join(root, name)
        for dirpath, _, files in os.walk(top):
            for f, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
                if f in files:
                    try:
                        with open(os.path.join(dirpath, f), "w") as fh:
                            fh.write(value)
                    except OSError:
                        pass
    for root in CGROUP_ROOTS:
        top = os.path.join(root, name)
        if not os.path.isdir(top):
            continue
        for dirpath, dirnames, _ in os.walk(top, topdown=False):
            procs = os.path.join(dirpath, "cgroup.procs")
            try:
                for pid in open(procs).read().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            except OSError:
                pass
            for _ in range(200):
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)


class API:
    def __init__(self, base, key):
        self.base = base
        self.key = key
        self.s = requests.Session()

    def with_key(self, key):
        return API(self.base, key)

    def req(self, method, path, key=..., **kw):
        headers = kw.pop("headers", {})
        k = self.key if key is ... else key
        if k:
            headers["Authorization"] = f"Bearer {k}"
        return self.s.request(method, self.base + path, headers=headers, timeout=kw.pop("timeout", 60), **kw)

    def ok(self, method, path, expect=(200, 201, 202, 204), **kw):
        r = self.req(method, path, **kw)
        assert r.status_code in (expect if isinstance(expect, tuple) else (expect,)), \
            f"{method} {path} -> {r.status_code} {r.text}"
        return r.json() if r.content and r.headers.get("content-type", "").startswith("application/json") else r

    def get(self, path, **kw):
        return self.ok("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.ok("POST", path, json=body, **kw)

    def agent(self, **fields):
        body = {"name": fields.pop("name", f"agent-{time.time_ns()}"), "model": "test-model",
                "sandbox": {"image": "minimal", "memory_mb": 128}}
        body.update(fields)
        return self.post("/v1/agents", body)

    def session(self, agent_id, title="e2e"):
        return self.post("/v1/sessions", {"agent_id": agent_id, "title": title})

    def exec(self, sid, command, **kw):
        body = {"command": command}
        body.update(kw)
        return self.post(f"/v1/sessions/{sid}/exec", body)


class Daemon:
    """One agentd process; restart() keeps its state directory."""

    def __init__(self, image_dir, env=None, extra_args=(), state_parent=None):
        self.state = tempfile.mkdtemp(prefix="agentd-e2e-", dir=state_parent)
        os.makedirs(os.path.join(self.state, "images"))
        os.symlink(image_dir, os.path.join(self.state, "images", "minimal"))
        self.cgroup_parent = f"agentd-e2e-{os.getpid()}-{time.time_ns() % 10**9}"
        self.env = dict(os.environ)
        self.env.update({"AGENTD_CGROUP_PARENT": self.cgroup_parent, "AGENTD_LOG_LEVEL": "info"})
        self.env.update(env or {})
        self.extra_args = list(extra_args)
        self.proc = None
        self.port = None
        self.start()

    @property
    def admin_key(self):
        return open(os.path.join(self.state, "admin.key")).read().strip()

    @property
    def socket(self):
        return os.path.join(self.state, "run", "agentd.sock")

    def start(self):
        self.log = open(os.path.join(self.state, "daemon.log"), "ab")
        self.proc = subprocess.Popen(
            [AGENTD, "serve", "--state-dir", self.state, "--listen", "127.0.0.1:0"] + self.extra_args,
            stdout=subprocess.PIPE, stderr=self.log, env=self.env)
        deadline = time.time() + 60
        while time.time() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                raise RuntimeError("agentd exited: " + open(os.path.join(self.state, "daemon.log")).read()[-3000:])
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
            if "ready" in line:
                self.ready_line = line.strip()
                break
        key_file = os.path.join(self.state, "admin.key")
        self.api = API(f"http://127.0.0.1:{self.port}", self.admin_key if os.path.exists(key_file) else None)
        return self

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)
        self.proc = None

    def kill9(self):
        self.stop(signal.SIGKILL)

    def restart(self):
        self.stop()
        return self.start()

    def rss_kib(self, field="VmRSS"):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0

    def agentctl(self, *args, input=None, check=False, key=None):
        env = dict(os.environ)
        env.update({"AGENTD_URL": f"http://127.0.0.1:{self.port}", "AGENTD_KEY": key or self.admin_key})
        r = subprocess.run([AGENTCTL] + list(args), input=input, capture_output=True, env=env, timeout=120)
        if check:
            assert r.returncode == 0, f"agentctl {args}: {r.returncode} {r.stderr.decode()}"
        return r

    def cleanup(self):
        self.stop(signal.SIGKILL)
        kill_cgroup_tree(self.cgroup_parent)
        leftovers = [r for r in CGROUP_ROOTS if os.path.isdir(os.path.join(r, self.cgroup_parent))]
        shutil.rmtree(self.state, ignore_errors=True)
        return leftovers


@pytest.fixture
def make_daemon(image_dir):
    made = []

    def make(**kw):
        d = Daemon(image_dir, **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        left = d.cleanup()
        assert not left, f"cgroups left behind: {left}"


@pytest.fixture
def daemon(make_daemon):
    return make_daemon()


@pytest.fixture
def api(daemon):
    return daemon.api


def sse_events(api, sid, last_event_id=None, until=None, timeout=30, max_events=10_000):
    """Read the session's SSE stream; returns (events, raw frames) when `until(event)` is true."""
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    r = api.req("GET", f"/v1/sessions/{sid}/events", headers=headers, stream=True, timeout=timeout)
    assert r.status_code == 200, r.text
    events = []
    buf = b""
    deadline = time.time() + timeout
    try:
        for chunk in r.iter_content(chunk_size=None):
            buf += chunk
            while b"\n\n" in buf:
                frame, buf = buf.split(b"\n\n", 1)
                ev = {"id": None, "event": "message", "data": []}
                for line in frame.decode().split("\n"):
                    if line.startswith(":"):
                        continue
                    k, _, v = line.partition(":")
                    v = v[1:] if v.startswith(" ") else v
                    if k == "id":
                        ev["id"] = int(v)
                    elif k == "event":
                        ev["event"] = v
                    elif k == "data":
                        ev["data"].append(v)
                if not ev["data"]:
                    continue
                ev["data"] = json.loads("\n".join(ev["data"]))
                events.append(ev)
                if (until and until(ev)) or len(events) >= max_events:
                    return events
            if time.time() > deadline:
                return events
    finally:
        r.close()
    return events


# ---- the model side: a scripted upstream and the real LiteLLM Gateway ------

LITELLM_KEY = "sk-agentd-e2e"


@pytest.fixture(scope="session")
def scripted():
    """The scripted OpenAI-compatible upstream: (port, script)."""
    from scripted_model import serve
    server, script = serve()
    yield server.server_address[1], script
    server.shutdown()


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="session")
def litellm(scripted, tmp_path_factory):
    """The real LiteLLM proxy (from PyPI, in this venv), offline, on loopback,
    with model `test-model` routed to the scripted upstream and priced so
    that cost is computed.  Yields its base URL."""
    import sys
    exe = os.path.join(os.path.dirname(sys.executable), "litellm")
    assert os.path.exists(exe), "litellm is not installed in the test venv (Tests/e2e/requirements.txt)"
    d = tmp_path_factory.mktemp("litellm")
    cfg = d / "config.yaml"
    cfg.write_text(f"""
model_list:
  - model_name: test-model
    litellm_params:
      model: openai/scripted
      api_base: http://127.0.0.1:{scripted[0]}/v1
      api_key: upstream-key
      input_cost_per_token: 0.000001
      output_cost_per_token: 0.000002
litellm_settings:
  include_cost_in_streaming_usage: true
  num_retries: 0
  telemetry: false
general_settings:
  master_key: {LITELLM_KEY}
""")
    port = free_port()
    env = dict(os.environ)
    env.update({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "NO_PROXY": "*", "no_proxy": "*"})
    log = open(d / "litellm.log", "wb")
    proc = subprocess.Popen([exe, "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        assert proc.poll() is None, "litellm exited: " + open(d / "litellm.log").read()[-3000:]
        try:
            if requests.get(url + "/health/liveliness", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("litellm did not start: " + open(d / "litellm.log").read()[-3000:])
    yield url + "/v1"
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def write_config(text):
    """A config file for one daemon, removed when the test session ends."""
    fd, path = tempfile.mkstemp(prefix="agentd-e2e-", suffix=".toml")
    os.write(fd, text.encode())
    os.close(fd)
    atexit.register(lambda: os.path.exists(path) and os.unlink(path))
    return path


def wait_run(api, sid, run_id, states=("succeeded", "failed", "cancelled"), timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = api.get(f"/v1/sessions/{sid}/runs/{run_id}")
        if run["state"] in states:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not reach {states}: {run}")


def transcript(api, sid):
    return api.get(f"/v1/sessions/{sid}/messages?limit=10000")["data"]
