"""Targeted generators for what a schema does not capture: the model's
tool-call arguments (random JSON of every shape into every tool), SSE
Last-Event-ID values, file paths (unicode, NUL, very long, `..` in every
position), upload bodies whose lengths lie, and agent specs.  Each is seeded
(repeatable) and bounded; the daemon must never answer 5xx, never die, and
never touch the host outside the sandbox."""
import json
import os
import random
import socket
import time
import urllib.parse

from conftest import transcript, wait_run
from test_hostile import alive

OK_STATUSES = {200, 201, 202, 204, 400, 404, 405, 409, 413, 415}


def test_random_tool_calls_get_tool_answers(make_daemon, scripted):
    d = make_daemon(env={"AGENTD_GATEWAY_URL": f"http://127.0.0.1:{scripted[0]}/v1"})
    api = d.api
    agent = api.agent(name="fuzzed", limits={"max_steps": 100, "tool_timeout_s": 5})
    sid = api.session(agent["id"])["id"]
    for seed in range(3):
        acc = api.post(f"/v1/sessions/{sid}/messages", {"content": f"toolfuzz {seed} 40"}, expect=202)
        run = wait_run(api, sid, acc["run_id"], timeout=300)
        alive(d)
        assert run["state"] == "succeeded", run
    events = transcript(api, sid)
    calls = [e for e in events if e["kind"] == "tool_call"]
    results = [e for e in events if e["kind"] == "tool_result"]
    # (Compaction can summarise an earlier run's message away, which the
    # scripted model then reads as a shorter script: at least one run's worth.)
    assert len(calls) == len(results) >= 40
    # Every result is an answer the model can read, errors included.
    assert all(isinstance(r["data"]["output"], str) for r in results)
    assert any(r["data"]["output"].startswith("error:") for r in results)


def test_random_last_event_ids(daemon):
    api = daemon.api
    sid = api.session(api.agent()["id"])["id"]
    api.post(f"/v1/sessions/{sid}/messages", {"content": "one"})
    rng = random.Random(7)
    values = ["", " ", "-1", "+1", "1e3", "0x10", "1.5", "١٢", "9" * 19, "9" * 400, "0", "1", " 1 ", "18446744073709551616",
              "\t2", "2\t", "1,2", "null"]
    values += ["".join(rng.choice("0123456789 -+eé") for _ in range(rng.randint(1, 30))) for _ in range(40)]
    for v in values:
        try:
            r = api.req("GET", f"/v1/sessions/{sid}/events",
                        headers={"Accept": "text/event-stream", "Last-Event-ID": v.encode("utf-8")}, stream=True,
                        timeout=10)
        except ValueError:
            continue  # not sendable as a header by the client library
        assert r.status_code in (200, 400), (v, r.status_code)
        r.close()
    alive(daemon)


def random_paths(rng):
    pieces = ["..", ".", "", "a", "workspace", "é", "\u202e", "😀", "\x00", "%00", "x" * 255, "x" * 256, "/",
              "proc", "self", "etc", "passwd", " ", "\n", "..\\..", "~"]
    out = ["/", "..", "/..", "../", "a/../..", "/workspace/../../etc/passwd", "x" * 5000, "/" * 3000, "\x00",
           "/workspace/\x00/x"]
    for _ in range(150):
        parts = [rng.choice(pieces) for _ in range(rng.randint(1, 8))]
        out.append(("/" if rng.random() < 0.5 else "") + "/".join(parts))
    return out


def test_random_file_paths_never_escape(daemon):
    api = daemon.api
    sid = api.session(api.agent()["id"])["id"]
    api.exec(sid, "ln -s / /workspace/root; ln -s ../../../../.. /workspace/up; mkdir -p /workspace/d")
    marker = f"agentd-fuzz-{os.getpid()}"
    rng = random.Random(11)
    for path in random_paths(rng) + [f"up/tmp/{marker}", f"root/tmp/{marker}", f"/workspace/up/tmp/{marker}"]:
        q = urllib.parse.quote(path, safe="")
        for method, route, body in [("GET", "files/content", None), ("PUT", "files/content", b"fuzz"),
                                    ("GET", "files", None), ("DELETE", "files", None)]:
            r = api.req(method, f"/v1/sessions/{sid}/{route}?path={q}", data=body)
            assert r.status_code in OK_STATUSES, (method, route, repr(path), r.status_code, r.text[:200])
            if r.status_code >= 400:
                assert r.json()["error"]["message"]
    assert not os.path.exists(f"/tmp/{marker}")
    alive(daemon)


def raw(daemon, data, read=True):
    s = socket.create_connection(("127.0.0.1", daemon.port), timeout=15)
    s.sendall(data)
    out = b""
    if read:
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except (socket.timeout, TimeoutError, ConnectionResetError):
            pass
    s.close()
    return out


def test_upload_bodies_whose_lengths_lie(make_daemon):
    from conftest import write_config
    d = make_daemon(extra_args=["--config", write_config("[http]\nidle_timeout_s = 2\n")])
    api = d.api
    sid = api.session(api.agent()["id"])["id"]
    auth = b"Authorization: Bearer " + d.admin_key.encode() + b"\r\n"
    head = b"PUT /v1/sessions/" + sid.encode() + b"/files/content?path=/workspace/%s HTTP/1.1\r\nHost: x\r\n" + auth
    cases = {
        "short": head % b"short" + b"Content-Length: 100\r\n\r\n" + b"x" * 10,
        "long": head % b"long" + b"Content-Length: 5\r\nConnection: close\r\n\r\n" + b"y" * 50 + b"\r\n\r\n",
        "badchunk": head % b"badchunk" + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        "shortchunk": head % b"shortchunk" + b"Transfer-Encoding: chunked\r\n\r\n10\r\nabc",
        "both": head % b"both" + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "negative": head % b"negative" + b"Content-Length: -5\r\n\r\nabc",
        "huge": head % b"huge" + b"Content-Length: 99999999999999999999999\r\n\r\nabc",
    }
    t0 = time.time()
    for name, data in cases.items():
        answer = raw(d, data)
        status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None
        assert status is None or status < 500, (name, answer[:300])
        alive(d)
    assert time.time() - t0 < 60
    # An upload cut short never leaves a partial file under its name.
    listing = {e["name"]: e for e in api.get(f"/v1/sessions/{sid}/files?path=/workspace")}
    assert "short" not in listing and "shortchunk" not in listing, listing
    if "long" in listing:
        assert listing["long"]["size"] == 5
    assert not [n for n in listing if n.startswith(".agentd-upload-")], listing


def test_random_agent_specs(daemon):
    api = daemon.api
    rng = random.Random(5)
    from scripted_model import fuzz_value
    fields = ["name", "model", "system_prompt", "tools", "sandbox", "env", "secrets", "harness", "limits", "team_id"]
    sandbox_fields = ["image", "memory_mb", "cpus", "pids", "tmp_mb", "network", "user_namespace", "read_only_root"]
    created = 0
    for i in range(300):
        spec = {"name": f"f{i}", "model": "m", "sandbox": {"image": "minimal"}}
        for f in rng.sample(fields, rng.randint(1, 4)):
            spec[f] = fuzz_value(rng)
        if rng.random() < 0.5:
            spec["sandbox"] = {k: (fuzz_value(rng) if rng.random() < 0.5 else v)
                               for k, v in {"image": "minimal", rng.choice(sandbox_fields): 64}.items()}
        r = api.req("POST", "/v1/agents", data=json.dumps(spec), headers={"Content-Type": "application/json"})
        assert r.status_code in OK_STATUSES, (spec, r.status_code, r.text[:300])
        if r.status_code == 201:
            created += 1
            got = api.get(f"/v1/agents/{r.json()['id']}")
            assert got["name"] == spec["name"]
    assert created > 0
    alive(daemon)
