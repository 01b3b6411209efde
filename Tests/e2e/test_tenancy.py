"""Nothing one team, one sandbox or one stray process does hurts the others
(issue #21): one owner of "in use" (long runs are not stopped as idle), and
instances that never touch each other's sandboxes."""
import time

from conftest import transcript, wait_run
from test_runs import gateway_env

# The idle stopper looks every 5 s; with idle_stop_seconds = 2 a sandbox
# unused for 12 s is certainly stopped, unless something holds it.
IDLE = {"AGENTD_IDLE_STOP_SECONDS": "2"}
LONG = 12


def sandbox_reasons(api, sid):
    return [e["data"].get("reason") for e in transcript(api, sid) if e["kind"] == "sandbox_status"]


def test_long_tool_call_and_long_model_step_keep_their_sandbox(make_daemon, scripted):
    """Finding 2: the worker used the sandbox without marking it in use, so
    the idle stopper killed a long tool call (exit 137) and, between steps,
    the sandbox the run was working in."""
    d = make_daemon(env={**IDLE, **gateway_env(f"http://127.0.0.1:{scripted[0]}/v1")})
    api = d.api
    sid = api.session(api.agent(name="patient", model="m")["id"])["id"]
    acc = api.post(f"/v1/sessions/{sid}/messages", {"content": f"longwork {LONG}"}, expect=202)
    run = wait_run(api, sid, acc["run_id"], timeout=120)
    assert run["state"] == "succeeded", run
    results = [e["data"] for e in transcript(api, sid) if e["kind"] == "tool_result"]
    assert results[0]["exit_code"] == 0 and "slept" in results[0]["output"], results
    # The model's long step did not lose the sandbox: /tmp (a tmpfs) still
    # held what the first call wrote.
    assert results[1]["exit_code"] == 0 and "alive" in results[1]["output"], results
    assert "idle" not in sandbox_reasons(api, sid)
    # Once the run is over nobody holds it: the idle stopper does its job.
    deadline = time.time() + 30
    while time.time() < deadline and "idle" not in sandbox_reasons(api, sid):
        time.sleep(1)
    assert "idle" in sandbox_reasons(api, sid)


def test_long_harness_run_keeps_its_sandbox(make_daemon, scripted):
    d = make_daemon(env={**IDLE, **gateway_env(f"http://127.0.0.1:{scripted[0]}/v1")})
    api = d.api
    agent = api.agent(name="long-harness", model="m",
                      harness={"command": ["/bin/sh", "-c", f"read msg; sleep {LONG}; echo done: $msg"]})
    sid = api.session(agent["id"])["id"]
    acc = api.post(f"/v1/sessions/{sid}/messages", {"content": "hello"}, expect=202)
    run = wait_run(api, sid, acc["run_id"], timeout=120)
    assert run["state"] == "succeeded", run
    result = [e["data"] for e in transcript(api, sid) if e["kind"] == "tool_result"][0]
    assert result["exit_code"] == 0 and "done: hello" in result["output"], result


def test_long_api_exec_keeps_its_sandbox(make_daemon):
    d = make_daemon(env=IDLE)
    api = d.api
    sid = api.session(api.agent()["id"])["id"]
    r = api.exec(sid, f"sleep {LONG}; echo survived")
    assert r["exit_code"] == 0 and "survived" in r["stdout"], r
