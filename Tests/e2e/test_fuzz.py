"""The fuzzing tier: schemathesis (from PyPI, in its own venv, .venv-fuzz)
generates requests from the served OpenAPI document against the real daemon
(every operation; examples, fuzzing and stateful sequences that chain what
one operation returns into the next), with a fixed seed and a bounded number
of examples so it fits in CI.  Every check but one: no 5xx, no crash,
statuses, content types, headers and bodies as the document says, every
schema-valid request accepted and every schema-violating one refused, 405
for undocumented methods, auth that cannot be skipped.  The daemon must still
be alive and serving afterwards.

Left out: `ensure_resource_availability`, which takes any 404 right after a
create for the created resource being gone; agentd also answers 404 for
things missing *inside* a sandbox (a command, a working directory, a file),
with the field named.  The coverage phase is left out too: schemathesis
4.32.5 fails in it on its own (a Hypothesis AST recursion error), not on
agentd.  Targeted generators for what the schema cannot capture are in
test_fuzz_targeted.py."""
import os
import subprocess

from conftest import REPO

SCHEMATHESIS = os.path.join(REPO, ".venv-fuzz", "bin", "schemathesis")


def run_schemathesis(daemon, *args, seconds):
    assert os.path.exists(SCHEMATHESIS), "schemathesis is not installed (scripts/test makes .venv-fuzz)"
    cmd = [SCHEMATHESIS, "--config-file", os.path.join(os.path.dirname(__file__), "schemathesis.toml"), "run",
           f"http://127.0.0.1:{daemon.port}/v1/openapi.json",
           "-H", f"Authorization: Bearer {daemon.admin_key}", "--checks", "all",
           "--exclude-checks", "ensure_resource_availability", "--workers", "1", "--request-timeout", "60",
           "--max-time", str(seconds), "--phases", "examples,fuzzing,stateful", "--seed", "20261207",
           "--suppress-health-check", "all", "--no-color"] + list(args)
    # Run outside the checkout: schemathesis keeps a cache of the failures
    # it found (.schemathesis/) in its working directory and replays them
    # first; each run starts from the seed alone.
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, cwd=daemon.state)
    if r.returncode != 0:
        # The failures' section, without the megabytes of generated bodies.
        text = r.stdout
        start = max(0, text.find("FAILURES"))
        report = "\n".join(line[:300] for line in text[start:].splitlines())
        # The daemon's own account of its 5xx answers.
        log = open(os.path.join(daemon.state, "daemon.log"), errors="replace").read().splitlines()
        errors = "\n".join(line[:2000] for line in log if " error " in line)[-8000:]
        raise AssertionError(report[:12000] + r.stderr[-2000:] + "\n--- daemon errors ---\n" + errors)
    assert daemon.proc.poll() is None, "agentd died under the fuzzer"
    assert daemon.api.req("GET", "/healthz").status_code == 200
    return r.stdout


def test_schemathesis_finds_no_5xx_crash_or_disagreement(daemon):
    # Revoking keys is fuzzed on its own afterwards: the fuzzing phase would
    # otherwise revoke the fuzzer's own key halfway (a made-up id can be
    # its id, listed by GET /v1/keys; the API allows it while another admin
    # key exists).
    out = run_schemathesis(daemon, "--max-examples", "25", "--exclude-operation-id", "delete_keys_item", seconds=120)
    # Every operation but the one fuzzed on its own below.
    assert "Tested: 35" in out and "Selected: 35/36" in out, out[-3000:]
    # Revocation with the keys it creates (the link from a create to its
    # revocation), and with made-up ids.
    run_schemathesis(daemon, "--max-examples", "50", "--include-operation-id", "delete_keys_item",
                     "--include-operation-id", "post_keys", seconds=30)
    # The last admin key still works.
    assert daemon.api.req("GET", "/v1/keys").status_code == 200
