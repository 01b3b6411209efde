"""Agent runs end to end: the real agentd, the real LiteLLM Gateway in front
of a scripted upstream model, real sandboxes, agentctl as the user's client."""
import json
import threading
import time

import pytest

from conftest import LITELLM_KEY, sse_events, transcript, wait_run, write_config


def gateway_env(url, key=None):
    env = {"AGENTD_GATEWAY_URL": url}
    if key:
        env["AGENTD_GATEWAY_KEY"] = key
    return env


@pytest.fixture
def via_litellm(make_daemon, litellm):
    return make_daemon(env=gateway_env(litellm, LITELLM_KEY))


@pytest.fixture
def direct(make_daemon, scripted):
    """agentd talking straight to the scripted upstream (any OpenAI-compatible server)."""
    return make_daemon(env=gateway_env(f"http://127.0.0.1:{scripted[0]}/v1"))


def kinds(events):
    return [e["kind"] for e in events]


def test_agent_run_through_litellm(via_litellm):
    """The whole path: agentctl chat -> run -> LiteLLM -> scripted model ->
    exec and write_file in the sandbox -> final answer, every step persisted
    in order, usage and cost recorded, deltas and the final message on SSE."""
    d = via_litellm
    api = d.api
    agent = api.agent(name="builder", model="test-model", system_prompt="You are a careful builder.")
    sid = api.session(agent["id"])["id"]

    seen = []
    watcher = threading.Thread(target=lambda: seen.extend(sse_events(
        api, sid, last_event_id=0, timeout=90,
        until=lambda e: e["event"] == "run_status" and e["data"]["data"]["state"] in ("succeeded", "failed"))))
    watcher.start()
    time.sleep(0.5)  # subscribed before the run starts, so the model streams

    r = d.agentctl("chat", sid, "please build the thing")
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert "⚙ exec" in out and "⚙ write_file" in out
    assert "All done." in out
    watcher.join(timeout=90)

    events = transcript(api, sid)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "seqs must be gap-free"
    run_events = [e for e in events if e["kind"] not in ("sandbox_status",)]
    assert kinds(run_events) == [
        "user_message",
        "assistant_message", "tool_call", "tool_result",
        "assistant_message", "tool_call", "tool_result",
        "assistant_message", "run_status",
    ]
    calls = [e["data"] for e in run_events if e["kind"] == "tool_call"]
    results = [e["data"] for e in run_events if e["kind"] == "tool_result"]
    assert [c["name"] for c in calls] == ["exec", "write_file"]
    assert [r["id"] for r in results] == [c["id"] for c in calls]
    assert results[0]["exit_code"] == 0 and "hello from exec" in results[0]["output"]
    assert "wrote" in results[1]["output"]
    assert run_events[1]["data"]["tool_calls"] == [calls[0]["id"]]
    assert run_events[-1]["data"]["state"] == "succeeded"
    final = run_events[-2]["data"]
    assert final["text"] == "All done. I ran a command and wrote notes/result.md for you."
    assert final["streamed"] is True

    # The files are really in the session's sandbox.
    f = api.req("GET", f"/v1/sessions/{sid}/files/content", params={"path": "notes/result.md"})
    assert f.status_code == 200 and f.text == "# Result\nexec said: hello from exec\n"
    assert api.exec(sid, ["cat", "/workspace/hello.txt"])["stdout"] == "hello from exec\n"

    # Usage and cost: per step, summed per run and per session.
    run = api.get(f"/v1/sessions/{sid}/runs/{events[-1]['run_id']}")
    assert run["state"] == "succeeded" and run["steps"] == 3
    assert run["usage"]["completion_tokens"] == 21 and run["usage"]["prompt_tokens"] > 0
    assert run["usage"]["cost_usd"] > 0
    steps = [e for e in run_events if e["kind"] == "assistant_message"]
    assert abs(sum(s["data"]["usage"]["cost_usd"] for s in steps) - run["usage"]["cost_usd"]) < 1e-9
    session = api.get(f"/v1/sessions/{sid}")
    assert session["usage"]["cost_usd"] == pytest.approx(run["usage"]["cost_usd"])
    assert session["status"] == "idle"

    # SSE: deltas that add up to the final text, then the persisted message.
    deltas = "".join(e["data"]["text"] for e in seen if e["event"] == "assistant_delta")
    assert final["text"] in deltas
    assert any(e["event"] == "assistant_message" and e["data"]["data"]["text"] == final["text"] for e in seen)

    # A message to a session nobody watches: the model is asked without
    # streaming, and LiteLLM's cost header is what prices it.
    sid2 = api.session(agent["id"])["id"]
    acc = api.post(f"/v1/sessions/{sid2}/messages", {"content": "thanks"}, expect=202)
    run2 = wait_run(api, sid2, acc["run_id"])
    assert run2["state"] == "succeeded"
    last = [e for e in transcript(api, sid2) if e["kind"] == "assistant_message"][-1]["data"]
    assert last["text"] == "echo: thanks" and last["streamed"] is False
    assert run2["usage"]["cost_usd"] > 0
    status = api.get("/v1/status")
    assert "reachable" in (status["gateway"] or "")


def test_kill9_mid_tool_resumes_without_rerunning(direct, scripted):
    d = direct
    api = d.api
    agent = api.agent(name="slowpoke", model="m")
    sid = api.session(agent["id"])["id"]
    acc = api.post(f"/v1/sessions/{sid}/messages", {"content": "be slow"}, expect=202)
    deadline = time.time() + 60
    while not any(e["kind"] == "tool_call" for e in transcript(api, sid)):
        assert time.time() < deadline
        time.sleep(0.1)
    time.sleep(1.0)  # the command is running in the sandbox now
    d.kill9()
    d.start()
    run = wait_run(api := d.api, sid, acc["run_id"])
    assert run["state"] == "succeeded", run
    events = transcript(api, sid)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    calls = [e for e in events if e["kind"] == "tool_call"]
    results = [e for e in events if e["kind"] == "tool_result"]
    assert len(calls) == 1 and len(results) == 1, kinds(events)
    assert results[0]["data"]["interrupted"] is True
    assert results[0]["data"]["id"] == calls[0]["data"]["id"]
    final = [e for e in events if e["kind"] == "assistant_message"][-1]["data"]["text"]
    assert "interrupted" in final
    # The model decided; the command was not silently started again.
    slow_requests = [q for q in scripted[1].requests if "be slow" in json.dumps(q["body"]["messages"])]
    assert len(slow_requests) == 2
    assert [e["data"]["state"] for e in events if e["kind"] == "run_status"] == ["succeeded"]


def test_kill9_mid_streamed_answer(direct, scripted):
    """Killed while the model's answer streams: nothing of it was persisted,
    so the restarted worker asks again; one answer, no gap, no duplicate."""
    d = direct
    api = d.api
    sid = api.session(api.agent(name="streamer", model="m")["id"])["id"]
    seen = []
    watcher = threading.Thread(target=lambda: seen.extend(sse_events(
        api, sid, last_event_id=0, timeout=20, until=lambda e: e["event"] == "assistant_delta" and
        "word5" in e["data"]["text"])))
    watcher.start()
    time.sleep(0.5)
    acc = api.post(f"/v1/sessions/{sid}/messages", {"content": "slowstream please"}, expect=202)
    watcher.join(timeout=20)
    assert any(e["event"] == "assistant_delta" for e in seen), "the answer was streaming"
    d.kill9()
    d.start()
    run = wait_run(d.api, sid, acc["run_id"])
    assert run["state"] == "succeeded"
    events = transcript(d.api, sid)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    answers = [e for e in events if e["kind"] == "assistant_message"]
    assert len(answers) == 1 and answers[0]["data"]["text"].endswith("word39")
    assert [e["kind"] for e in events if e["kind"] != "sandbox_status"] == ["user_message", "assistant_message", "run_status"]
    asked = [q for q in scripted[1].requests if "slowstream please" in json.dumps(q["body"]["messages"])]
    assert len(asked) == 2
    assert run["steps"] == 1


def test_tool_exceeding_its_timeout(direct):
    api = direct.api
    agent = api.agent(name="impatient", model="m", limits={"tool_timeout_s": 1})
    sid = api.session(agent["id"])["id"]
    t0 = time.time()
    acc = api.post(f"/v1/sessions/{sid}/messages", {"content": "slow is fine"}, expect=202)
    run = wait_run(api, sid, acc["run_id"])
    assert run["state"] == "succeeded"
    assert time.time() - t0 < 15
    result = [e for e in transcript(api, sid) if e["kind"] == "tool_result"][0]["data"]
    assert result["exit_code"] == 137 and "timeout" in result["output"]
    assert "finished" not in result["output"]


def test_cancel_stops_a_running_tool_within_a_second(direct):
    api = direct.api
    agent = api.agent(name="cancellable", model="m")
    sid = api.session(agent["id"])["id"]
    acc = api.post(f"/v1/sessions/{sid}/messages", {"content": "be slow please"}, expect=202)
    deadline = time.time() + 60
    while not any(e["kind"] == "tool_call" for e in transcript(api, sid)):
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    t0 = time.time()
    api.post(f"/v1/sessions/{sid}/cancel")
    run = wait_run(api, sid, acc["run_id"], timeout=10)
    elapsed = time.time() - t0
    assert run["state"] == "cancelled"
    assert elapsed < 1.0, f"cancel took {elapsed:.2f}s"
    ps = api.exec(sid, "ps -o args 2>/dev/null || ps")["stdout"]
    assert "sleep 30" not in ps
    events = transcript(api, sid)
    result = [e for e in events if e["kind"] == "tool_result"][-1]["data"]
    assert "cancelled" in result["output"]
    assert api.get(f"/v1/sessions/{sid}")["status"] == "idle"


def test_failures_end_in_clear_persisted_states(make_daemon, scripted):
    cfg = write_config("""
[gateway]
max_attempts = 3
[worker]
max_tool_output_bytes = 4096
""")
    d = make_daemon(env=gateway_env(f"http://127.0.0.1:{scripted[0]}/v1"), extra_args=["--config", cfg])
    api = d.api
    agent = api.agent(name="failing", model="m")

    def send(text, agent_id=agent["id"]):
        sid = api.session(agent_id)["id"]
        acc = api.post(f"/v1/sessions/{sid}/messages", {"content": text}, expect=202)
        return sid, wait_run(api, sid, acc["run_id"])

    # A 4xx from the model is not retried and fails the run with its reason.
    before = len(scripted[1].requests)
    sid, run = send("broken request")
    assert run["state"] == "failed" and "400" in run["error"]
    assert len(scripted[1].requests) - before == 1
    errors = [e for e in transcript(api, sid) if e["kind"] == "error"]
    assert errors and "400" in errors[0]["data"]["message"]

    # 429 with Retry-After: waited for, retried, recovered.
    t0 = time.time()
    sid, run = send("flaky model")
    assert run["state"] == "succeeded"
    assert time.time() - t0 >= 1.0

    # Arguments that are not JSON: an error result to the model, not a crash.
    sid, run = send("badargs now")
    assert run["state"] == "succeeded"
    result = [e for e in transcript(api, sid) if e["kind"] == "tool_result"][0]["data"]
    assert result["error"] is True and "not a JSON object" in result["output"]

    # Tool output beyond the limit is truncated with a note.
    sid, run = send("bigout please")
    result = [e for e in transcript(api, sid) if e["kind"] == "tool_result"][0]["data"]
    assert result["truncated"] is True and "truncated" in result["output"]
    assert len(result["output"].encode()) < 4096 + 400

    # max_steps.
    looper = api.agent(name="looper", model="m", limits={"max_steps": 3})
    sid, run = send("loop forever", looper["id"])
    assert run["state"] == "failed" and "3 steps" in run["error"] and run["steps"] == 3

    # agentctl reports the failure and exits non-zero.
    sid = api.session(agent["id"])["id"]
    r = d.agentctl("chat", sid, "broken again")
    assert r.returncode == 1 and "400" in r.stderr.decode()


def test_gateway_down(make_daemon):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    cfg = write_config("[gateway]\nmax_attempts = 2\n")
    d = make_daemon(env=gateway_env(f"http://127.0.0.1:{port}/v1"), extra_args=["--config", cfg])
    api = d.api
    sid = api.session(api.agent(name="lonely", model="m")["id"])["id"]
    acc = api.post(f"/v1/sessions/{sid}/messages", {"content": "anyone?"}, expect=202)
    run = wait_run(api, sid, acc["run_id"])
    assert run["state"] == "failed" and "cannot reach the gateway" in run["error"]
    assert "unreachable" in api.get("/v1/status")["gateway"]


def test_no_gateway_configured(daemon):
    api = daemon.api
    sid = api.session(api.agent(name="nogw", model="m")["id"])["id"]
    acc = api.post(f"/v1/sessions/{sid}/messages", {"content": "hi"}, expect=202)
    run = wait_run(api, sid, acc["run_id"])
    assert run["state"] == "failed" and "no model gateway is configured" in run["error"]


def test_sandbox_that_cannot_start_fails_the_run(direct):
    api = direct.api
    agent = api.agent(name="doomed", model="m")
    sid = api.session(agent["id"])["id"]
    # The image disappears after the agent was made: the sandbox cannot start.
    import os
    os.unlink(os.path.join(direct.state, "images", "minimal"))
    acc = api.post(f"/v1/sessions/{sid}/messages", {"content": "build it"}, expect=202)
    run = wait_run(api, sid, acc["run_id"])
    assert run["state"] == "failed" and "sandbox" in run["error"]


def test_compaction_is_recorded(make_daemon, scripted):
    cfg = write_config("[worker]\ncontext_chars = 1000\n")
    d = make_daemon(env=gateway_env(f"http://127.0.0.1:{scripted[0]}/v1"), extra_args=["--config", cfg])
    api = d.api
    sid = api.session(api.agent(name="chatty", model="m")["id"])["id"]
    for i in range(6):
        acc = api.post(f"/v1/sessions/{sid}/messages", {"content": f"message {i} " + "x" * 200}, expect=202)
        assert wait_run(api, sid, acc["run_id"])["state"] == "succeeded"
    events = transcript(api, sid)
    compactions = [e for e in events if e["kind"] == "compaction"]
    assert compactions and compactions[-1]["data"]["summary"] == "SUMMARY-TEXT"
    # Later requests carry the summary instead of what it covers.
    last = scripted[1].requests[-1]["body"]["messages"]
    assert any("SUMMARY-TEXT" in (m.get("content") or "") for m in last)
    assert not any("message 0" in (m.get("content") or "") for m in last)


def test_harness_agent_reaches_the_gateway_and_nothing_else(make_daemon, litellm):
    d = make_daemon(env=gateway_env(litellm, LITELLM_KEY))
    api = d.api
    real_port = litellm.split(":")[2].split("/")[0]
    script = (
        'read msg; '
        'body="{\\"model\\":\\"$AGENTD_MODEL\\",\\"messages\\":[{\\"role\\":\\"user\\",\\"content\\":\\"$msg\\"}]}"; '
        'answer=$(wget -q -O - --header "Content-Type: application/json" '
        '--header "Authorization: Bearer $OPENAI_API_KEY" --post-data "$body" "$OPENAI_BASE_URL/chat/completions") '
        '|| { echo "gateway unreachable" >&2; exit 3; }; '
        'echo "$answer" | grep -o "echo: [a-z ]*"; '
        # Anything but the relay is unreachable: the real gateway's own address, and the outside.
        'if wget -q -T 2 -O /dev/null "http://127.0.0.1:' + real_port + '/health/liveliness"; then echo LEAK-LOCAL; fi; '
        'if wget -q -T 2 -O /dev/null http://10.0.2.2/ 2>/dev/null; then echo LEAK-OUTSIDE; fi; '
        'echo "base=$OPENAI_BASE_URL"'
    )
    agent = api.agent(name="harnessed", model="test-model", harness={"command": ["/bin/sh", "-c", script]})
    sid = api.session(agent["id"])["id"]
    r = d.agentctl("chat", sid, "hello harness")
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert "echo: hello harness" in out
    assert "LEAK" not in out
    assert "base=http://127.0.0.1:4000/v1" in out
    events = transcript(api, sid)
    assert [e["kind"] for e in events if e["kind"] != "sandbox_status"] == [
        "user_message", "tool_call", "tool_result", "assistant_message", "run_status"]
    result = [e for e in events if e["kind"] == "tool_result"][0]["data"]
    assert result["exit_code"] == 0 and "echo: hello harness" in result["output"]
    # Between runs the relay is gone: nothing listens on the sandbox's 4000.
    probe = api.exec(sid, "wget -q -T 2 -O - http://127.0.0.1:4000/v1/models || echo closed")
    assert "closed" in probe["stdout"]
    # A failing harness fails its run with the exit code.
    bad = api.agent(name="harness-fails", model="m", harness={"command": ["/bin/sh", "-c", "echo oops >&2; exit 4"]})
    sid2 = api.session(bad["id"])["id"]
    acc = api.post(f"/v1/sessions/{sid2}/messages", {"content": "x"}, expect=202)
    run = wait_run(api, sid2, acc["run_id"])
    assert run["state"] == "failed" and "code 4" in run["error"] and "oops" in run["error"]
