"""agentctl against the real daemon: every route group, exit codes, --json, one-line errors."""
import json
import os


def test_agentctl_end_to_end(daemon, tmp_path):
    ctl = daemon.agentctl
    team = ctl("teams", "create", "cli-team", check=True).stdout.decode().strip()
    key = ctl("keys", "create", "--name", "cli", "--role", "owner", "--team", team, check=True).stdout.decode().strip()
    assert key.startswith("agentd_")
    assert "cli" in ctl("keys", "list", key=key, check=True).stdout.decode()
    agent = ctl("agents", "create", "--name", "cli-agent", "--model", "m", "--image", "minimal", "--memory-mb", "128",
                "--env", "GREETING=hello", key=key, check=True).stdout.decode().strip()
    assert agent.startswith("agt_")
    shown = json.loads(ctl("--json", "agents", "get", agent, key=key, check=True).stdout)
    assert shown["env"] == {"GREETING": "hello"}
    ctl("agents", "update", agent, "--cpus", "0.5", key=key, check=True)
    assert json.loads(ctl("agents", "get", agent, "--json", key=key, check=True).stdout)["sandbox"]["cpus"] == 0.5
    # Secrets come from stdin or a file, never the command line.
    ctl("secrets", "set", "CLI_SECRET", input=b"from-stdin\n", key=key, check=True)
    (tmp_path / "secret.txt").write_text("from-file")
    ctl("secrets", "set", "FILE_SECRET", "--from-file", str(tmp_path / "secret.txt"), key=key, check=True)
    listed = ctl("secrets", "list", key=key, check=True).stdout.decode()
    assert "CLI_SECRET" in listed and "from-stdin" not in listed
    sid = ctl("sessions", "create", "--agent", agent, "--title", "cli session", key=key, check=True).stdout.decode().strip()
    assert sid.startswith("ses_")
    r = ctl("exec", sid, "--", "sh", "-c", "echo $GREETING $CLI_SECRET $FILE_SECRET; exit 7", key=key)
    assert r.returncode == 7 and r.stdout.decode() == "hello from-stdin from-file\n"
    r = ctl("exec", sid, "--", "cat", input=b"piped input", key=key)
    assert r.returncode == 0 and r.stdout == b"piped input"
    # cp both ways.
    src = tmp_path / "up.bin"
    src.write_bytes(os.urandom(3 << 20))
    ctl("cp", str(src), f"{sid}:/workspace/up.bin", key=key, check=True)
    ctl("cp", f"{sid}:/workspace/up.bin", str(tmp_path / "down.bin"), key=key, check=True)
    assert (tmp_path / "down.bin").read_bytes() == src.read_bytes()
    assert "up.bin" in ctl("ls", sid, key=key, check=True).stdout.decode()
    ctl("rm", sid, "/workspace/up.bin", key=key, check=True)
    assert "up.bin" not in ctl("ls", sid, key=key, check=True).stdout.decode()
    assert "state:  running" in ctl("sandbox", sid, key=key, check=True).stdout.decode()
    assert "state:  stopped" in ctl("sandbox", sid, "stop", key=key, check=True).stdout.decode()
    # Messages, runs and cancel.
    assert ctl("sessions", "list", key=key, check=True).stdout.decode().count("ses_") == 1
    assert "cli session" in ctl("sessions", "get", sid, key=key, check=True).stdout.decode()
    ctl("status", check=True)
    # Errors: one readable line, non-zero exit.
    r = ctl("sessions", "get", "ses_doesnotexist00000000", key=key)
    assert r.returncode != 0 and r.stderr.decode().count("\n") == 1 and "not found" in r.stderr.decode()
    r = ctl("agents", "create", "--name", "x", "--model", "m", "--image", "nope", key=key)
    assert r.returncode != 0 and "sandbox.image" in r.stderr.decode()
    r = ctl("exec", sid, "--", "/no/such/thing", key=key)
    assert r.returncode == 127
    r = ctl("teams", key="agentd_wrong")
    assert r.returncode != 0 and "API key" in r.stderr.decode()
    ctl("sessions", "delete", sid, key=key, check=True)
    ctl("agents", "delete", agent, key=key, check=True)
    ctl("keys", "revoke", json.loads(ctl("--json", "keys", "list", key=key).stdout)[0]["id"], key=key, check=True)
    assert ctl("agents", "list", key=key).returncode != 0


def test_agentctl_over_the_unix_socket_with_the_admin_key(daemon):
    import subprocess
    from conftest import AGENTCTL
    env = dict(os.environ, AGENTD_SOCKET=daemon.socket, AGENTD_STATE_DIR=daemon.state)
    env.pop("AGENTD_URL", None)
    env.pop("AGENTD_KEY", None)
    r = subprocess.run([AGENTCTL, "teams", "--json"], env=env, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["name"] == "admin"
    st = os.stat(daemon.socket)
    assert oct(st.st_mode & 0o777) == "0o660"
    assert oct(os.stat(os.path.join(daemon.state, "admin.key")).st_mode & 0o777) == "0o600"


def test_completions_are_generated(daemon):
    import subprocess
    from conftest import AGENTCTL
    r = subprocess.run([AGENTCTL, "--generate-completion-script", "bash"], capture_output=True)
    assert r.returncode == 0 and b"agentctl" in r.stdout
