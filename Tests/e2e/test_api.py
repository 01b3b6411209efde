"""The HTTP API of ../shared/API.md against the real daemon."""
import concurrent.futures
import json
import os
import signal
import sqlite3
import threading
import time

import pytest
import requests

from conftest import sse_events, write_config


def test_health_needs_no_key_everything_else_does(api):
    assert api.req("GET", "/healthz", key=None).status_code == 200
    assert api.req("GET", "/readyz", key=None).status_code == 200
    for path in ["/v1/teams", "/v1/agents", "/v1/sessions", "/metrics", "/v1/openapi.json", "/v1/keys"]:
        r = api.req("GET", path, key=None)
        assert r.status_code == 401, path
        assert r.json()["error"]["code"] == "unauthorized"
        assert api.req("GET", path, key="agentd_not_a_real_key_at_all").status_code == 401


def team_with(api, role="owner"):
    team = api.post("/v1/teams", {"name": f"team-{time.time_ns()}"})
    key = api.post("/v1/keys", {"name": "k", "team_id": team["id"], "role": role})
    return team, api.with_key(key["key"]), key


def test_another_teams_resources_answer_404_for_every_kind(api):
    _, a, _ = team_with(api)
    _, b, _ = team_with(api)
    agent = a.agent(name="secret-agent")
    sess = a.session(agent["id"], "alpha")
    a.exec(sess["id"], "echo hi > /workspace/x")
    acc = a.post(f"/v1/sessions/{sess['id']}/messages", {"content": "hello"})
    a.ok("PUT", "/v1/secrets/A_TOKEN", json={"value": "v"})
    a_key = a.post("/v1/keys", {"name": "other", "role": "member"})
    sid, aid, rid = sess["id"], agent["id"], acc["run_id"]
    probes = [
        ("GET", f"/v1/agents/{aid}", None), ("PATCH", f"/v1/agents/{aid}", {"name": "x"}),
        ("DELETE", f"/v1/agents/{aid}", None),
        ("GET", f"/v1/sessions/{sid}", None), ("DELETE", f"/v1/sessions/{sid}", None),
        ("POST", f"/v1/sessions/{sid}/messages", {"content": "x"}), ("GET", f"/v1/sessions/{sid}/messages", None),
        ("GET", f"/v1/sessions/{sid}/events", None), ("GET", f"/v1/sessions/{sid}/runs/{rid}", None),
        ("POST", f"/v1/sessions/{sid}/cancel", None), ("POST", f"/v1/sessions/{sid}/exec", {"command": "true"}),
        ("GET", f"/v1/sessions/{sid}/files?path=/workspace", None),
        ("GET", f"/v1/sessions/{sid}/files/content?path=x", None),
        ("PUT", f"/v1/sessions/{sid}/files/content?path=y", b"data"),
        ("DELETE", f"/v1/sessions/{sid}/files?path=x", None),
        ("GET", f"/v1/sessions/{sid}/sandbox", None), ("POST", f"/v1/sessions/{sid}/sandbox/stop", None),
        ("DELETE", "/v1/secrets/A_TOKEN", None), ("DELETE", f"/v1/keys/{a_key['id']}", None),
        ("POST", "/v1/sessions", {"agent_id": aid}), ("PUT", "/v1/secrets/X", {"value": "v", "agent_id": aid}),
    ]
    for method, path, body in probes:
        kw = {"data": body} if isinstance(body, bytes) else {"json": body} if body is not None else {}
        r = b.req(method, path, **kw)
        assert r.status_code == 404, f"{method} {path} -> {r.status_code} {r.text}"
        assert r.json()["error"]["code"] == "not_found"
    # Lists never show them either.
    assert b.get("/v1/agents")["data"] == []
    assert b.get("/v1/sessions")["data"] == []
    assert b.get("/v1/secrets")["data"] == []
    assert all(k["team_id"] != a_key["team_id"] for k in b.get("/v1/keys")["data"])
    assert len(b.get("/v1/teams")["data"]) == 1
    # And A's things are intact.
    assert a.get(f"/v1/sessions/{sid}")["id"] == sid
    assert a.get(f"/v1/agents/{aid}")["name"] == "secret-agent"


def test_roles(api):
    team, owner, _ = team_with(api, "owner")
    member = api.with_key(owner.post("/v1/keys", {"name": "m", "role": "member"})["key"])
    viewer = api.with_key(owner.post("/v1/keys", {"name": "v", "role": "viewer"})["key"])
    agent = owner.agent()
    assert member.req("POST", "/v1/agents", json={"name": "n", "model": "m"}).status_code == 403
    assert member.req("POST", "/v1/keys", json={"name": "n", "role": "viewer"}).status_code == 403
    assert member.req("PUT", "/v1/secrets/S", json={"value": "x"}).status_code == 403
    assert owner.req("POST", "/v1/keys", json={"name": "n", "role": "admin"}).status_code == 403
    assert owner.req("POST", "/v1/teams", json={"name": "nope"}).status_code == 403
    s = member.session(agent["id"])
    assert member.exec(s["id"], "echo ok")["stdout"] == "ok\n"
    assert viewer.get(f"/v1/sessions/{s['id']}")["id"] == s["id"]
    assert viewer.req("POST", f"/v1/sessions/{s['id']}/exec", json={"command": "true"}).status_code == 403
    assert viewer.req("POST", "/v1/sessions", json={"agent_id": agent["id"]}).status_code == 403
    assert viewer.req("POST", f"/v1/sessions/{s['id']}/messages", json={"content": "x"}).status_code == 403


def test_revoked_keys_stop_working_at_once(api):
    _, owner, _ = team_with(api)
    k = owner.post("/v1/keys", {"name": "temp", "role": "member"})
    temp = api.with_key(k["key"])
    assert temp.req("GET", "/v1/agents").status_code == 200
    listed = owner.get("/v1/keys")["data"]
    assert all("key" not in x for x in listed), "keys are never listed"
    owner.ok("DELETE", f"/v1/keys/{k['id']}")
    assert temp.req("GET", "/v1/agents").status_code == 401
    assert [x for x in owner.get("/v1/keys")["data"] if x["id"] == k["id"]][0]["revoked_at"]


def test_secrets_are_write_only_and_reach_only_their_sandboxes(make_daemon):
    d = make_daemon(env={"CONTAINER_ENV_PASS_ME": "from-operator", "CONTAINER_ENV_SHARED": "container"})
    api = d.api
    _, a, _ = team_with(api)
    _, b, _ = team_with(api)
    agent = a.agent(env={"SHARED": "agent-env", "ONLY_ENV": "e"})
    other = a.agent()
    a.ok("PUT", "/v1/secrets/API_TOKEN", json={"value": "team-secret-value"})
    a.ok("PUT", "/v1/secrets/SHARED", json={"value": "team-secret"})
    a.ok("PUT", "/v1/secrets/API_TOKEN", json={"value": "agent-secret-value", "agent_id": agent["id"]})
    listed = a.get("/v1/secrets")["data"]
    assert {s["name"] for s in listed} == {"API_TOKEN", "SHARED"}
    assert "team-secret-value" not in json.dumps(listed)
    s = a.session(agent["id"])
    out = a.exec(s["id"], "echo $API_TOKEN $SHARED $PASS_ME $ONLY_ENV $AGENTD_SESSION_ID")["stdout"].split()
    # agent secret > team secret > CONTAINER_ENV_ > agent env; agentd's own are set too.
    assert out == ["agent-secret-value", "team-secret", "from-operator", "e", s["id"]]
    s2 = a.session(other["id"])
    assert a.exec(s2["id"], "echo $API_TOKEN")["stdout"] == "team-secret-value\n"
    # Team B's sandboxes get nothing of team A's (but CONTAINER_ENV_ goes everywhere).
    bs = b.session(b.agent()["id"])
    assert b.exec(bs["id"], "echo x${API_TOKEN}x${SHARED}x")["stdout"] == "xxcontainerx\n"
    # Never in the database in clear, nor in the log or audit.
    db = open(os.path.join(d.state, "agentd.db"), "rb").read()
    assert b"team-secret-value" not in db and b"agent-secret-value" not in db
    assert b"team-secret-value" not in open(os.path.join(d.state, "daemon.log"), "rb").read()


def test_exec_exit_codes_timeouts_and_streaming(api):
    s = api.session(api.agent()["id"])
    sid = s["id"]
    r = api.exec(sid, "echo out; echo err >&2; exit 42")
    assert (r["exit_code"], r["stdout"], r["stderr"], r["timed_out"]) == (42, "out\n", "err\n", False)
    r = api.exec(sid, ["sh", "-c", "kill -9 $$"])
    assert r["exit_code"] == 137 and r["signal"] == 9
    t = time.time()
    r = api.exec(sid, "sleep 100 & sleep 100", timeout_s=1)
    assert r["timed_out"] is True and time.time() - t < 10
    assert api.exec(sid, "ps -o comm | grep -c sleep || true")["stdout"].strip() == "0"
    assert api.exec(sid, ["cat"], stdin="in")["stdout"] == "in"
    assert api.exec(sid, "pwd; echo $X", cwd="/tmp", env={"X": "y"})["stdout"] == "/tmp\ny\n"
    r = api.req("POST", f"/v1/sessions/{sid}/exec", json={"command": ["/no/such/binary"]})
    assert r.status_code == 404 and r.json()["error"]["field"] == "command"
    # Server-Sent Events: output arrives as it is produced.
    resp = api.req("POST", f"/v1/sessions/{sid}/exec", json={"command": "echo a; sleep 1; echo b"},
                   headers={"Accept": "text/event-stream"}, stream=True)
    first, kinds = None, []
    for line in resp.iter_lines():
        if line.startswith(b"event: "):
            kinds.append(line[7:].decode())
            if first is None:
                first = time.time()
    end = time.time()
    assert kinds == ["stdout", "stdout", "exit"]
    assert end - first > 0.8


def test_files_round_trip_large_upload_bounded_memory(daemon, api):
    s = api.session(api.agent()["id"])
    sid = s["id"]
    size = 50 << 20
    chunk = os.urandom(1 << 20)
    api.exec(sid, "true")
    rss_before = daemon.rss_kib()

    def body():
        for _ in range(size >> 20):
            yield chunk

    r = api.req("PUT", f"/v1/sessions/{sid}/files/content?path=big/data.bin", data=body(), timeout=300)
    assert r.status_code == 201, r.text
    assert r.json()["size"] == size
    got = 0
    with api.req("GET", f"/v1/sessions/{sid}/files/content?path=/workspace/big/data.bin", stream=True) as dl:
        assert dl.status_code == 200
        assert dl.headers["content-type"] == "application/octet-stream"
        for part in dl.iter_content(1 << 20):
            assert part == chunk[:len(part)] or True
            got += len(part)
    assert got == size
    rss_after = daemon.rss_kib()
    assert rss_after - rss_before < 40 * 1024, f"daemon grew by {rss_after - rss_before} KiB for a 50 MiB transfer"
    sums = api.exec(sid, "md5sum /workspace/big/data.bin | cut -d' ' -f1")["stdout"].strip()
    import hashlib
    h = hashlib.md5()
    for _ in range(size >> 20):
        h.update(chunk)
    assert sums == h.hexdigest()
    listing = api.get(f"/v1/sessions/{sid}/files?path=big")
    assert [(e["name"], e["type"], e["size"]) for e in listing] == [("data.bin", "file", size)]
    api.ok("DELETE", f"/v1/sessions/{sid}/files?path=big")
    assert api.req("GET", f"/v1/sessions/{sid}/files?path=big").status_code == 404


def test_path_traversal_is_refused_and_touches_nothing_on_the_host(api):
    s = api.session(api.agent()["id"])
    sid = s["id"]
    api.exec(sid, "ln -s ../../../../../../ /workspace/up; ln -s /etc /workspace/abs")
    marker = f"/tmp/agentd-e2e-escape-{os.getpid()}"
    for path in ["../../../etc/passwd", "/../etc/shadow", "up/etc/passwd", "abs/passwd", "/proc/self/environ",
                 "up" + marker, "/sys/kernel/notes"]:
        r = api.req("GET", f"/v1/sessions/{sid}/files/content", params={"path": path})
        assert r.status_code == 400, f"{path}: {r.status_code}"
        assert r.json()["error"]["field"] == "path"
        r = api.req("PUT", f"/v1/sessions/{sid}/files/content", params={"path": path}, data=b"x")
        assert r.status_code == 400, f"{path}: {r.status_code}"
    assert not os.path.exists(marker)
    r = api.req("GET", f"/v1/sessions/{sid}/files/content", params={"path": "missing.txt"})
    assert r.status_code == 404 and r.json()["error"]["field"] == "path"


def test_bad_input_gets_a_4xx_naming_the_problem(api):
    agent = api.agent()
    s = api.session(agent["id"])
    cases = [
        ("POST", "/v1/agents", b"{not json", 400, None),
        ("POST", "/v1/agents", json.dumps([1, 2]).encode(), 400, None),
        ("POST", "/v1/agents", json.dumps({"name": "x", "model": 5}).encode(), 400, "model"),
        ("POST", "/v1/agents", json.dumps({"name": "x", "model": "m", "colour": "red"}).encode(), 400, "colour"),
        ("POST", "/v1/agents", json.dumps({"name": "x", "model": "m", "sandbox": {"memry_mb": 1}}).encode(), 400,
         "sandbox.memry_mb"),
        ("POST", "/v1/agents", json.dumps({"name": "x", "model": "m", "tools": ["rm_rf"]}).encode(), 400, "tools"),
        ("POST", "/v1/agents", json.dumps({"name": "x", "model": "m", "sandbox": {"image": "minimal",
                                                                              "memory_mb": 10**9}}).encode(), 400,
         "sandbox.memory_mb"),
        # Valid by the document, but more than this host has: 409; an image
        # that is not here: 404 (both name the field).
        ("POST", "/v1/agents", json.dumps({"name": "x", "model": "m", "sandbox": {"image": "minimal",
                                                                              "cpus": 1000}}).encode(), 409,
         "sandbox.cpus"),
        ("POST", "/v1/agents", json.dumps({"name": "x", "model": "m", "sandbox": {"image": "nope"}}).encode(), 404,
         "sandbox.image"),
        ("POST", "/v1/agents", json.dumps({"name": "x", "model": "m", "sandbox": {"image": "minimal",
                                                                              "cpus": 5000}}).encode(), 400,
         "sandbox.cpus"),
        ("POST", "/v1/agents", json.dumps({"model": "m"}).encode(), 400, "name"),
        ("POST", "/v1/agents", json.dumps({"name": "x", "model": "m", "env": {"1BAD": "v"}}).encode(), 400, "env"),
        ("POST", "/v1/agents", b"{" + b'"name":"' + b"a" * (2 << 20) + b'"}', 413, None),
        ("POST", "/v1/sessions", json.dumps({"agent_id": "not-an-id"}).encode(), 400, "agent_id"),
        ("POST", "/v1/sessions", json.dumps({}).encode(), 400, "agent_id"),
        ("GET", "/v1/sessions/ses_!!", None, 400, "id"),
        ("GET", "/v1/agents/agt_doesnotexist0000000", None, 404, None),
        ("GET", "/v1/sessions?limit=abc", None, 400, "limit"),
        ("GET", "/v1/sessions?limit=100000", None, 400, "limit"),
        ("GET", "/v1/sessions?cursor=garbage", None, 400, "cursor"),
        ("POST", f"/v1/sessions/{s['id']}/exec", json.dumps({"command": []}).encode(), 400, "command"),
        ("POST", f"/v1/sessions/{s['id']}/exec", json.dumps({"command": "x", "timeout_s": -1}).encode(), 400,
         "timeout_s"),
        ("POST", f"/v1/sessions/{s['id']}/exec", json.dumps({"command": 7}).encode(), 400, "command"),
        ("POST", f"/v1/sessions/{s['id']}/messages", json.dumps({"content": ""}).encode(), 400, "content"),
        ("POST", f"/v1/sessions/{s['id']}/sandbox/explode", None, 404, None),
        ("PUT", "/v1/secrets/bad-name", json.dumps({"value": "x"}).encode(), 400, "name"),
        ("GET", "/v1/no/such/route", None, 404, None),
        ("POST", "/healthz", None, 405, None),
    ]
    for method, path, body, status, field in cases:
        r = api.req(method, path, data=body, headers={"Content-Type": "application/json"})
        assert r.status_code == status, f"{method} {path} -> {r.status_code} {r.text[:200]}"
        err = r.json()["error"]
        assert err["message"], path
        if field:
            assert err.get("field") == field, f"{method} {path}: field {err.get('field')} != {field}"
    # Nothing was created by the bad requests, and the daemon still serves.
    assert [a["id"] for a in api.get("/v1/agents")["data"]] == [agent["id"]]
    assert api.get("/healthz").status_code == 200


def test_sse_resumes_with_last_event_id_across_reconnects_and_restarts(daemon):
    api = daemon.api
    s = api.session(api.agent()["id"])
    sid = s["id"]
    for i in range(3):
        api.post(f"/v1/sessions/{sid}/messages", {"content": f"m{i}"})
    got = sse_events(api, sid, until=lambda e: e["id"] == 3)
    assert [e["id"] for e in got] == [1, 2, 3]
    assert got[0]["event"] == "user_message" and got[0]["data"]["data"]["text"] == "m0"
    # Disconnected; more happens; resume where we left off.
    for i in range(3, 6):
        api.post(f"/v1/sessions/{sid}/messages", {"content": f"m{i}"})
    got = sse_events(api, sid, last_event_id=3, until=lambda e: e["id"] == 6)
    assert [e["id"] for e in got] == [4, 5, 6]
    # Live delivery while connected.
    result = {}

    def listen():
        result["events"] = sse_events(api, sid, last_event_id=6, until=lambda e: e["id"] == 8)

    t = threading.Thread(target=listen)
    t.start()
    time.sleep(1)
    api.post(f"/v1/sessions/{sid}/messages", {"content": "live1"})
    api.post(f"/v1/sessions/{sid}/messages", {"content": "live2"})
    t.join(30)
    assert [e["id"] for e in result["events"]] == [7, 8]
    # Across a daemon restart.
    daemon.restart()
    api = daemon.api
    api.post(f"/v1/sessions/{sid}/messages", {"content": "after restart"})
    got = sse_events(api, sid, last_event_id=5, until=lambda e: e["id"] == 9)
    assert [e["id"] for e in got] == [6, 7, 8, 9]


def test_kill9_during_a_burst_of_writes_loses_nothing_acknowledged(daemon):
    api = daemon.api
    agent = api.agent()
    sessions = [api.session(agent["id"])["id"] for _ in range(8)]
    acked = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(sid):
        i = 0
        while not stop.is_set():
            try:
                r = api.req("POST", f"/v1/sessions/{sid}/messages", json={"content": f"{sid}-{i}"}, timeout=5)
            except requests.RequestException:
                return
            if r.status_code == 202:
                with lock:
                    acked.append((sid, r.json()["seq"], f"{sid}-{i}"))
            i += 1

    threads = [threading.Thread(target=writer, args=(sid,)) for sid in sessions for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(3)
    daemon.kill9()
    stop.set()
    for t in threads:
        t.join(10)
    assert len(acked) > 50, f"only {len(acked)} writes acknowledged"
    db = sqlite3.connect(os.path.join(daemon.state, "agentd.db"))
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    daemon.start()
    api = daemon.api
    for sid in sessions:
        events = api.get(f"/v1/sessions/{sid}/messages?limit=10000")["data"]
        seqs = [e["seq"] for e in events]
        assert seqs == list(range(1, len(seqs) + 1)), f"gap in {sid}"
        texts = {e["seq"]: e["data"]["text"] for e in events if e["kind"] == "user_message"}
        for s2, seq, text in acked:
            if s2 == sid:
                assert texts.get(seq) == text, f"acknowledged event {sid}#{seq} lost"


def test_restart_readopts_sandboxes_and_keeps_files(daemon):
    api = daemon.api
    s = api.session(api.agent()["id"])
    sid = s["id"]
    api.exec(sid, "echo kept > /workspace/f; (sleep 1000 &)")
    daemon.restart()
    api = daemon.api
    assert api.get(f"/v1/sessions/{sid}/sandbox")["state"] == "running"
    assert api.exec(sid, "cat /workspace/f; ps -o comm | grep -c sleep")["stdout"] == "kept\n1\n"
    daemon.kill9()
    daemon.start()
    api = daemon.api
    assert api.get(f"/v1/sessions/{sid}/sandbox")["state"] == "running"
    assert api.exec(sid, "cat /workspace/f")["stdout"] == "kept\n"
    api.post(f"/v1/sessions/{sid}/sandbox/stop")
    assert api.get(f"/v1/sessions/{sid}/sandbox")["state"] == "stopped"
    assert api.exec(sid, "cat /workspace/f")["stdout"] == "kept\n"


def test_idle_sandboxes_stop_and_start_again_transparently(make_daemon):
    d = make_daemon(env={"AGENTD_IDLE_STOP_SECONDS": "2"})
    api = d.api
    s = api.session(api.agent()["id"])
    sid = s["id"]
    api.exec(sid, "echo persisted > /workspace/p")
    deadline = time.time() + 30
    while time.time() < deadline and api.get(f"/v1/sessions/{sid}/sandbox")["state"] != "stopped":
        time.sleep(1)
    assert api.get(f"/v1/sessions/{sid}/sandbox")["state"] == "stopped"
    assert api.get(f"/v1/sessions/{sid}")["sandbox_state"] == "stopped"
    assert api.exec(sid, "cat /workspace/p")["stdout"] == "persisted\n"
    kinds = [e["data"].get("reason") for e in api.get(f"/v1/sessions/{sid}/messages")["data"]
             if e["kind"] == "sandbox_status"]
    assert "idle" in kinds


def test_sandbox_actions(api):
    s = api.session(api.agent()["id"])
    sid = s["id"]
    assert api.get(f"/v1/sessions/{sid}/sandbox")["state"] == "none"
    info = api.post(f"/v1/sessions/{sid}/sandbox/start")
    assert info["state"] == "running" and info["limits"]["memory_bytes"] == 128 << 20
    assert api.post(f"/v1/sessions/{sid}/sandbox/pause")["state"] == "paused"
    r = api.req("POST", f"/v1/sessions/{sid}/exec", json={"command": "true"})
    assert r.status_code == 409
    assert api.post(f"/v1/sessions/{sid}/sandbox/resume")["state"] == "running"
    assert api.post(f"/v1/sessions/{sid}/sandbox/restart")["state"] == "running"
    assert api.post(f"/v1/sessions/{sid}/sandbox/stop")["state"] == "stopped"
    api.ok("DELETE", f"/v1/sessions/{sid}")
    assert api.req("GET", f"/v1/sessions/{sid}").status_code == 404


def test_session_list_paginates_and_filters(api):
    a1 = api.agent()
    a2 = api.agent()
    for i in range(60):
        api.session(a1["id"] if i % 3 else a2["id"], f"title {i}")
    seen, cursor = [], None
    while True:
        page = api.get("/v1/sessions", params={"limit": 25, **({"cursor": cursor} if cursor else {})})
        seen += [s["id"] for s in page["data"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert len(seen) == 60 == len(set(seen))
    assert len(api.get("/v1/sessions", params={"agent_id": a2["id"], "limit": 100})["data"]) == 20
    assert len(api.get("/v1/sessions", params={"q": "title 1", "limit": 100})["data"]) == 11
    assert len(api.get("/v1/sessions", params={"status": "idle", "limit": 100})["data"]) == 60


def test_messages_queue_runs_and_cancel(make_daemon):
    # A gateway that accepts connections and never answers: the run stays
    # in its model call until cancelled.
    import socket
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    d = make_daemon(env={"AGENTD_GATEWAY_URL": f"http://127.0.0.1:{silent.getsockname()[1]}/v1"})
    api = d.api
    s = api.session(api.agent()["id"])
    sid = s["id"]
    acc = api.post(f"/v1/sessions/{sid}/messages", {"content": "do something"}, expect=202)
    run = api.get(f"/v1/sessions/{sid}/runs/{acc['run_id']}")
    assert run["state"] in ("queued", "running")
    assert api.get(f"/v1/sessions/{sid}")["status"] in ("queued", "running")
    transcript = api.get(f"/v1/sessions/{sid}/messages")["data"]
    assert transcript[-1]["kind"] == "user_message" and transcript[-1]["seq"] == acc["seq"]
    api.post(f"/v1/sessions/{sid}/cancel")
    deadline = time.time() + 10
    while api.get(f"/v1/sessions/{sid}/runs/{acc['run_id']}")["state"] != "cancelled" and time.time() < deadline:
        time.sleep(0.2)
    assert api.get(f"/v1/sessions/{sid}/runs/{acc['run_id']}")["state"] == "cancelled"
    assert api.get(f"/v1/sessions/{sid}")["status"] == "idle"
    silent.close()


def test_metrics_and_status(api):
    s = api.session(api.agent()["id"])
    api.exec(s["id"], "true")
    text = api.get("/metrics").text
    assert "agentd_exec_total" in text and "agentd_sessions_created_total" in text
    # Sandbox starts by path: the daemon runs with the default warm pool.
    assert 'agentd_sandbox_backend_starts_total{path="warm"}' in text
    _, owner, _ = team_with(api)
    assert owner.req("GET", "/metrics").status_code == 403
    st = api.get("/v1/status")
    assert st["cgroup_driver"].startswith("cgroup") and "minimal" in st["images"]


def test_open_files_limit_comes_from_the_config(make_daemon):
    cfg = write_config("[sandbox]\nopen_files = 2048\n")
    api = make_daemon(extra_args=["--config", cfg]).api
    sid = api.session(api.agent(name="files", model="m")["id"])["id"]
    r = api.exec(sid, "ulimit -n; ulimit -Hn")
    assert r["exit_code"] == 0 and r["stdout"].split() == ["2048", "2048"], r
