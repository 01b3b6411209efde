"""Nothing one team, one sandbox or one stray process does hurts the others
(issue #21): one owner of "in use" (long runs are not stopped as idle), and
instances that never touch each other's sandboxes."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import AGENTD, CGROUP_ROOTS, kill_cgroup_tree, transcript, wait_run
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


def sandbox_cgroup_of(host_pid):
    """The cgroup directory of a host process: its v1 freezer cgroup on a
    hybrid host, else its cgroup v2 one."""
    lines = open(f"/proc/{host_pid}/cgroup").read().splitlines()
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "freezer" in controllers.split(","):
            return "/sys/fs/cgroup/freezer" + path
    for line in lines:
        if line.startswith("0::"):
            return "/sys/fs/cgroup" + line[3:]
    raise AssertionError(f"no cgroup for {host_pid}")


def host_pids_running(marker):
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if marker in open(f"/proc/{p}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace"):
                    out.append(int(p))
            except OSError:
                pass
    return out


def test_instances_never_touch_each_others_sandboxes(make_daemon, image_dir):
    """Finding 1: a second agentd (a `sandbox run`, a daemon, its restart
    after kill -9) removed the first one's sandbox cgroups as "leftovers" and
    killed what ran in them.  Three newcomers share the first daemon's cgroup
    parent here, as they do agentd's default one on a host."""
    shared = f"agentd-e2e-shared-{os.getpid()}-{time.time_ns() % 10**9}"
    other_state = tempfile.mkdtemp(prefix="agentd-e2e-run-")
    daemons = []
    try:
        a = make_daemon(env={"AGENTD_CGROUP_PARENT": shared})
        daemons.append(a)
        api = a.api
        sid = api.session(api.agent()["id"])["id"]
        assert api.exec(sid, "echo alive > /tmp/marker; sleep 3601 >/dev/null 2>&1 &")["exit_code"] == 0
        started = api.get(f"/v1/sessions/{sid}/sandbox")["started_at"]
        events_before = len(transcript(api, sid))

        def untouched(after):
            box = api.get(f"/v1/sessions/{sid}/sandbox")
            assert box["state"] == "running" and box["started_at"] == started, (after, box)
            assert api.exec(sid, "cat /tmp/marker")["stdout"] == "alive\n", after
            assert host_pids_running("sleep 3601"), after
            assert len(transcript(api, sid)) == events_before, (after, transcript(api, sid)[events_before:])

        # `agentd sandbox run` beside it, with its own state directory.
        r = subprocess.run([AGENTD, "sandbox", "run", "--state-dir", other_state, "--rootfs", str(image_dir), "--",
                            "echo", "hello"], env={**os.environ, "AGENTD_CGROUP_PARENT": shared},
                           capture_output=True, timeout=120)
        assert r.returncode == 0 and b"hello" in r.stdout, r.stderr.decode()
        untouched("sandbox run")
        # A second daemon: it starts (recovery), runs a sandbox, dies by
        # kill -9, starts again (recovery of its own leftovers), stops.
        b = make_daemon(env={"AGENTD_CGROUP_PARENT": shared})
        daemons.append(b)
        untouched("second daemon's start")
        bsid = b.api.session(b.api.agent()["id"])["id"]
        assert b.api.exec(bsid, "echo b")["stdout"] == "b\n"
        b.kill9()
        b.start()
        untouched("second daemon's restart after kill -9")
        assert b.api.exec(bsid, "echo b again")["stdout"] == "b again\n"
        b.stop()
        untouched("second daemon's stop")

        # Killed from outside: the session says so.
        pids = host_pids_running("sleep 3601")
        cg = sandbox_cgroup_of(pids[0])
        for p in open(os.path.join(cg, "cgroup.procs")).read().split():
            os.kill(int(p), signal.SIGKILL)
        deadline = time.time() + 20
        stops = []
        while time.time() < deadline and not stops:
            stops = [e["data"] for e in transcript(api, sid)
                     if e["kind"] == "sandbox_status" and e["data"].get("state") == "stopped"]
            time.sleep(0.2)
        assert stops and stops[0]["reason"] == "killed", stops
        assert "signal 9" in stops[0]["message"] and "outside agentd" in stops[0]["message"], stops
        assert api.get(f"/v1/sessions/{sid}")["sandbox_state"] == "stopped"
        # And it starts again on the next use.
        assert api.exec(sid, "echo back")["stdout"] == "back\n"
    finally:
        # The daemons first: a running one refills its warm pool under the
        # shared parent (their own parents are cleaned by the fixture).
        for d in daemons:
            d.stop(signal.SIGKILL)
        kill_cgroup_tree(shared)
        shutil.rmtree(other_state, ignore_errors=True)
        left = [r for r in CGROUP_ROOTS if os.path.isdir(os.path.join(r, shared))]
        assert not left, f"cgroups left behind: {left}"


def team_with_owner(api, name):
    team = api.post("/v1/teams", {"name": name})
    key = api.post("/v1/keys", {"name": "owner", "team_id": team["id"], "role": "owner"})["key"]
    return team, api.with_key(key)


def quota_error(r, status, field):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == "quota_exceeded" and err["field"] == field, err
    return err["message"]


def test_team_quotas(make_daemon):
    """Finding 4: no team could be bounded.  Admins set quotas; each is a
    clear 409 or 429 naming it where it is used up, and other teams are
    not affected."""
    d = make_daemon()
    admin = d.api
    team, owner = team_with_owner(admin, "bounded")
    tid = team["id"]
    # Only admins set quotas; bad values name the field.
    assert owner.req("PATCH", f"/v1/teams/{tid}", json={"quotas": {"sessions": 1}}).status_code == 403
    r = admin.req("PATCH", f"/v1/teams/{tid}", json={"quotas": {"sessions": -1}})
    assert r.status_code == 400 and r.json()["error"]["field"] == "quotas.sessions", r.text
    r = admin.req("PATCH", f"/v1/teams/{tid}", json={"quotas": {"disk": 1}})
    assert r.status_code == 400 and "quotas.disk" in r.text, r.text
    t = admin.ok("PATCH", f"/v1/teams/{tid}", json={"quotas": {
        "sessions": 2, "running_sandboxes": 1, "concurrent_runs": 0, "queued_runs": 1, "memory_mb": 300, "cpus": 2}})
    assert t["quotas"]["sessions"] == 2 and t["usage"]["sessions"] == 0
    # Members see their own team's quotas and usage, not another team's.
    assert owner.get(f"/v1/teams/{tid}")["quotas"]["running_sandboxes"] == 1
    assert owner.req("GET", f"/v1/teams/{admin.get('/v1/teams')['data'][0]['id']}").status_code == 404

    agent = owner.agent(name="small")  # 128 MiB
    s1 = owner.session(agent["id"])["id"]
    s2 = owner.session(agent["id"])["id"]
    quota_error(owner.req("POST", "/v1/sessions", json={"agent_id": agent["id"]}), 409, "sessions")
    # One running sandbox at a time.
    assert owner.exec(s1, "echo one")["stdout"] == "one\n"
    msg = quota_error(owner.req("POST", f"/v1/sessions/{s2}/exec", json={"command": "true"}), 429, "running_sandboxes")
    assert "1" in msg
    usage = owner.get(f"/v1/teams/{tid}")["usage"]
    assert usage["running_sandboxes"] == 1 and usage["memory_mb"] == 128 and usage["cpus"] == 1, usage
    owner.post(f"/v1/sessions/{s1}/sandbox/stop")
    assert owner.exec(s2, "echo two")["stdout"] == "two\n"
    owner.post(f"/v1/sessions/{s2}/sandbox/stop")
    # Memory of running sandboxes, summed.
    big = owner.agent(name="big", sandbox={"image": "minimal", "memory_mb": 512})
    owner.req("DELETE", f"/v1/sessions/{s2}")
    s3 = owner.session(big["id"])["id"]
    quota_error(owner.req("POST", f"/v1/sessions/{s3}/exec", json={"command": "true"}), 429, "memory_mb")
    # Queued runs: concurrent_runs 0 holds runs in the queue; one may wait.
    assert owner.post(f"/v1/sessions/{s1}/messages", {"content": "first"}, expect=202)
    quota_error(owner.req("POST", f"/v1/sessions/{s1}/messages", json={"content": "second"}), 429, "queued_runs")
    assert owner.get(f"/v1/teams/{tid}")["usage"]["queued_runs"] == 1
    # Another team is not bound by this one's quotas.
    other = admin.session(admin.agent()["id"])["id"]
    assert admin.exec(other, "echo free")["stdout"] == "free\n"
    # Lifting the run quota lets the queued run go (it fails at once: no model gateway here).
    admin.ok("PATCH", f"/v1/teams/{tid}", json={"quotas": {"sessions": 2}})
    deadline = time.time() + 30
    while time.time() < deadline and owner.get(f"/v1/teams/{tid}")["usage"]["queued_runs"]:
        time.sleep(0.2)
    assert owner.get(f"/v1/teams/{tid}")["usage"]["queued_runs"] == 0
    assert owner.post(f"/v1/sessions/{s1}/messages", {"content": "third"}, expect=202)


def test_agentctl_team_quotas(make_daemon):
    d = make_daemon()
    team = d.api.post("/v1/teams", {"name": "cli-bounded"})
    r = d.agentctl("teams", "quota", team["id"], "--sessions", "3", "--cpus", "1.5", check=True)
    out = r.stdout.decode()
    assert "sessions" in out and "3" in out and "1.5" in out, out
    r = d.agentctl("teams", "quota", team["id"], "--running-sandboxes", "2", "--unset", "cpus", "--json", check=True)
    q = json.loads(r.stdout)["quotas"]
    assert q.get("sessions") == 3 and q.get("running_sandboxes") == 2 and q.get("cpus") is None, q
    out = d.agentctl("teams", "show", team["id"], check=True).stdout.decode()
    assert "running_sandboxes" in out and "QUOTA" in out, out


@pytest.fixture
def small_fs(tmp_path):
    """A 128 MiB ext4 file system on a loop device (no root reserve), made
    for the test and removed after it."""
    image = tmp_path / "fs.img"
    # A short path: unix socket paths under it must fit in 108 bytes.
    mnt = tempfile.mkdtemp(prefix="afs")
    subprocess.run(["truncate", "-s", "128M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    try:
        yield str(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        os.rmdir(mnt)


def fill(path, leave_mib):
    """Fill the file system of `path` from outside agentd until `leave_mib`
    MiB are free (0: until a write fails for lack of space)."""
    filler = os.path.join(path, f"filler-{time.time_ns()}")
    st = os.statvfs(path)
    size = max(0, st.f_bavail * st.f_frsize - leave_mib * (1 << 20))
    while size > 0 and subprocess.run(["fallocate", "-l", str(size), filler], capture_output=True).returncode != 0:
        size -= 1 << 20
    if leave_mib == 0:
        with open(filler, "ab") as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
            except OSError:
                pass
    return filler


def test_a_full_state_directory_is_refused_clearly_and_recovers_by_itself(make_daemon, small_fs):
    """Finding 3's second half: with the state directory's file system full,
    every team's requests answered 500 and the database and the sandboxes
    disagreed.  Now: below the reserve, sandbox starts and uploads are 507
    with a message; when it is full, writes are 507 too (never 500); nothing
    acknowledged is lost; the recorded states match the sandboxes again,
    and it all works again once space returns, without a restart."""
    run_dir = tempfile.mkdtemp(prefix="r")  # sockets: a short path, off the small file system
    d = make_daemon(env={"AGENTD_DISK_RESERVE_MB": "24", "AGENTD_RUN_DIR": run_dir}, state_parent=small_fs)
    api = d.api
    agent = api.agent()
    running = api.session(agent["id"])["id"]
    assert api.exec(running, "echo up")["stdout"] == "up\n"
    acked = [api.post(f"/v1/sessions/{running}/messages", {"content": f"before {i}"}, expect=202)["seq"]
             for i in range(3)]
    idle = api.session(agent["id"])["id"]

    # Below the reserve (8 MiB left, 24 kept).
    filler = fill(small_fs, 8)
    r = api.req("POST", f"/v1/sessions/{idle}/exec", json={"command": "true"})
    assert r.status_code == 507, r.text
    err = r.json()["error"]
    assert err["code"] == "insufficient_storage" and "MiB free" in err["message"], err
    r = api.req("PUT", f"/v1/sessions/{running}/files/content", params={"path": "x.bin"}, data=b"x" * 1024)
    assert r.status_code == 507, r.text
    # The session says why its sandbox did not start.
    assert any(e["kind"] == "error" and e["data"]["code"] == "insufficient_storage" for e in transcript(api, idle))
    # What runs keeps running, and small writes still land in the reserve.
    assert api.exec(running, "echo still")["stdout"] == "still\n"
    acked.append(api.post(f"/v1/sessions/{running}/messages", {"content": "in the reserve"}, expect=202)["seq"])
    metrics = api.req("GET", "/metrics").text
    assert "agentd_low_disk_refusals_total" in metrics and "agentd_state_free_bytes" in metrics

    # Completely full: still no 500, only clear answers.
    filler2 = fill(small_fs, 0)
    codes = set()
    for _ in range(20):
        r = api.req("POST", f"/v1/sessions/{running}/messages", json={"content": "x" * 4000})
        codes.add(r.status_code)
        if r.status_code == 202:
            acked.append(r.json()["seq"])
    r = api.req("POST", "/v1/sessions", json={"agent_id": agent["id"]})
    codes.add(r.status_code)
    r = api.req("POST", f"/v1/sessions/{running}/sandbox/stop")
    codes.add(r.status_code)
    assert codes <= {200, 201, 202, 507}, codes
    assert 507 in codes, codes
    assert api.req("GET", f"/v1/sessions/{running}").status_code == 200

    # Space returns: everything works again without a restart.
    os.unlink(filler2)
    os.unlink(filler)
    assert api.exec(idle, "echo back")["stdout"] == "back\n"
    r = api.req("PUT", f"/v1/sessions/{running}/files/content", params={"path": "x.bin"}, data=b"x" * 1024)
    assert r.status_code == 201, r.text
    acked.append(api.post(f"/v1/sessions/{running}/messages", {"content": "after"}, expect=202)["seq"])
    # Nothing acknowledged was lost.
    seqs = {e["seq"] for e in transcript(api, running)}
    assert set(acked) <= seqs, (acked, sorted(seqs))
    # The recorded sandbox states agree with the sandboxes (a stop whose
    # record the full disk refused is recorded by the reconciliation).
    deadline = time.time() + 20
    while time.time() < deadline:
        agree = all(api.get(f"/v1/sessions/{s}")["sandbox_state"] == api.get(f"/v1/sessions/{s}/sandbox")["state"]
                    for s in (running, idle))
        if agree:
            break
        time.sleep(0.5)
    assert agree, [(api.get(f"/v1/sessions/{s}")["sandbox_state"], api.get(f"/v1/sessions/{s}/sandbox")["state"])
                   for s in (running, idle)]
    d.stop()
    shutil.rmtree(run_dir, ignore_errors=True)


def test_one_teams_backlog_does_not_hold_back_another_team(make_daemon, scripted):
    """Finding 4's second half: the worker served runs in claim order, so one
    team's backlog delayed every other team's next turn by all of it.  Team
    A queues 300 runs; team B's one run, sent after them, is done while
    nearly all of A's still wait."""
    d = make_daemon(env=gateway_env(f"http://127.0.0.1:{scripted[0]}/v1"))
    admin = d.api
    _, a = team_with_owner(admin, "backlogged")
    _, b = team_with_owner(admin, "patient")
    agent_a = a.agent(name="busy")
    sessions = [a.session(agent_a["id"])["id"] for _ in range(300)]
    for sid in sessions:
        a.post(f"/v1/sessions/{sid}/messages", {"content": "backlog"}, expect=202)
    team_a = a.get("/v1/teams")["data"][0]["id"]

    def queued():
        return a.get(f"/v1/teams/{team_a}")["usage"]["queued_runs"]

    sb = b.session(b.agent(name="quick")["id"])["id"]
    before = queued()
    assert before >= 100, before  # (the worker has been serving A meanwhile)
    t0 = time.time()
    run = b.post(f"/v1/sessions/{sb}/messages", {"content": "my turn"}, expect=202)
    done = wait_run(b, sb, run["run_id"], timeout=60)
    waited = time.time() - t0
    assert done["state"] == "succeeded", done
    # B went at the next free slot: A's backlog shrank by a few runs only
    # (first in, first out, B would have waited for all of them).
    left = queued()
    assert before - left <= 12, (before, left, waited)
    # All of A's runs still finish.
    deadline = time.time() + 240
    while time.time() < deadline and queued():
        time.sleep(1)
    for sid in sessions[:5] + sessions[-5:]:
        assert a.get(f"/v1/sessions/{sid}")["status"] == "idle"
