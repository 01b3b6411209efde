"""Air-gapped operation: agentd in a network namespace with nothing but
loopback (no interface, no route, no DNS), the LiteLLM Gateway and the
scripted model beside it on that loopback.  agentd starts, serves, runs
sandboxes and agent runs, and never needs anything else."""
import os
import subprocess
import sys
import time

import pytest

from conftest import AGENTCTL, AGENTD, LITELLM_KEY, REPO, kill_cgroup_tree, free_port


def netns_exec(ns, *cmd, **kw):
    return subprocess.run(["ip", "netns", "exec", ns] + list(cmd), **kw)


@pytest.fixture
def offline_ns():
    name = f"agentd-offline-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        netns_exec(name, "ip", "link", "set", "lo", "up", check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "pids", name], capture_output=True)
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
        for p in pids:
            try:
                os.kill(int(p), 9)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "delete", name], check=True)


def wait_http(ns, url, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = netns_exec(ns, sys.executable, "-c",
                       f"import urllib.request; urllib.request.urlopen('{url}', timeout=2)",
                       capture_output=True)
        if r.returncode == 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"{url} did not come up in the namespace")


def test_agentd_runs_with_only_loopback(offline_ns, image_dir, tmp_path):
    ns = offline_ns
    # Only loopback: no other link, no route at all.
    links = netns_exec(ns, "ip", "-o", "link", capture_output=True, text=True, check=True).stdout
    assert [l.split(":")[1].strip() for l in links.strip().splitlines()] == ["lo"]
    routes = netns_exec(ns, "ip", "route", capture_output=True, text=True, check=True).stdout
    assert routes.strip() == ""

    procs = []
    cgroup = f"agentd-offline-{os.getpid()}"
    import pathlib
    import shutil
    import tempfile
    state = pathlib.Path(tempfile.mkdtemp(prefix="ao-"))  # short: sockets live under it
    (state / "images").mkdir(parents=True)
    os.symlink(image_dir, state / "images" / "minimal")
    try:
        # The scripted upstream and the real LiteLLM Gateway, offline, in the namespace.
        model_port, gw_port = free_port(), free_port()
        procs.append(subprocess.Popen(["ip", "netns", "exec", ns, sys.executable,
                                       os.path.join(REPO, "Tests", "e2e", "scripted_model.py"), str(model_port)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        cfg = tmp_path / "litellm.yaml"
        cfg.write_text(f"""
model_list:
  - model_name: test-model
    litellm_params:
      model: openai/scripted
      api_base: http://127.0.0.1:{model_port}/v1
      api_key: upstream-key
      input_cost_per_token: 0.000001
      output_cost_per_token: 0.000002
litellm_settings:
  num_retries: 0
  telemetry: false
general_settings:
  master_key: {LITELLM_KEY}
""")
        env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True")
        litellm = os.path.join(os.path.dirname(sys.executable), "litellm")
        procs.append(subprocess.Popen(["ip", "netns", "exec", ns, litellm, "--config", str(cfg), "--host",
                                       "127.0.0.1", "--port", str(gw_port)],
                                      stdout=open(tmp_path / "litellm.log", "wb"), stderr=subprocess.STDOUT, env=env))
        wait_http(ns, f"http://127.0.0.1:{gw_port}/health/liveliness")

        env = dict(os.environ, AGENTD_CGROUP_PARENT=cgroup, AGENTD_GATEWAY_URL=f"http://127.0.0.1:{gw_port}/v1",
                   AGENTD_GATEWAY_KEY=LITELLM_KEY)
        # nsenter, not `ip netns exec`: that also remounts /sys for the
        # namespace, which hides /sys/fs/cgroup, so agentd would find no
        # cgroups and its sandboxes would outlive the test.
        daemon = subprocess.Popen(["nsenter", f"--net=/run/netns/{ns}", AGENTD, "serve", "--state-dir", str(state),
                                   "--listen", "127.0.0.1:8787"],
                                  stdout=subprocess.PIPE, stderr=open(tmp_path / "agentd.log", "wb"), env=env)
        procs.append(daemon)
        deadline = time.time() + 60
        while time.time() < deadline:
            line = daemon.stdout.readline().decode()
            assert line, "agentd exited: " + open(tmp_path / "agentd.log").read()[-2000:]
            if "ready" in line:
                break

        # The CLI reaches it over the Unix socket (the filesystem is shared).
        ctl_env = dict(os.environ, AGENTD_SOCKET=str(state / "run" / "agentd.sock"),
                       AGENTD_KEY=(state / "admin.key").read_text().strip())

        def ctl(*args):
            r = subprocess.run([AGENTCTL] + list(args), capture_output=True, env=ctl_env, timeout=120)
            assert r.returncode == 0, (args, r.stdout.decode(), r.stderr.decode())
            return r.stdout.decode()

        import json
        status = json.loads(ctl("--json", "status"))
        assert status["cgroup_driver"].startswith("cgroup"), status  # limits enforced offline too
        agent = json.loads(ctl("--json", "agents", "create", "--name", "offline", "--model", "test-model",
                               "--image", "minimal"))["id"]
        sid = json.loads(ctl("--json", "sessions", "create", "--agent", agent, "--title", "offline"))["id"]
        assert ctl("exec", sid, "--", "sh", "-c", "echo sandbox works").strip() == "sandbox works"
        out = ctl("chat", sid, "please build it offline")
        assert "All done." in out
        assert ctl("exec", sid, "--", "cat", "/workspace/notes/result.md").startswith("# Result")
        # The API over TCP answers inside the namespace too.
        r = netns_exec(ns, sys.executable, "-c",
                       "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8787/healthz').read())",
                       capture_output=True, text=True)
        assert r.returncode == 0 and "ok" in r.stdout.lower()
    finally:
        for p in reversed(procs):
            p.kill()
            p.wait()
        kill_cgroup_tree(cgroup)
        shutil.rmtree(state, ignore_errors=True)
