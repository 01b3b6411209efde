"""The OpenAPI document: valid, committed, and matching the served routes both ways."""
import json
import os
import re

from openapi_spec_validator import validate

from conftest import REPO


def test_document_is_valid_and_is_the_committed_one(api):
    doc = api.get("/v1/openapi.json")
    validate(doc)
    committed = json.load(open(os.path.join(REPO, "Sources", "AgentdServer", "openapi.json")))
    assert doc == committed, "run `agentd openapi > Sources/AgentdServer/openapi.json` and commit it"


def test_documented_routes_are_served_and_others_are_not(api):
    doc = api.get("/v1/openapi.json")
    agent = api.agent()
    sid = api.session(agent["id"])["id"]
    ids = {"id": sid, "run_id": "run_0000000000000000000000", "name": "SOME_SECRET", "action": "status"}
    contract = [
        ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/v1/openapi.json"),
        ("POST", "/v1/teams"), ("GET", "/v1/teams"), ("POST", "/v1/keys"), ("GET", "/v1/keys"),
        ("DELETE", "/v1/keys/{id}"), ("POST", "/v1/agents"), ("GET", "/v1/agents"), ("GET", "/v1/agents/{id}"),
        ("PATCH", "/v1/agents/{id}"), ("DELETE", "/v1/agents/{id}"), ("PUT", "/v1/secrets/{name}"),
        ("GET", "/v1/secrets"), ("DELETE", "/v1/secrets/{name}"), ("POST", "/v1/sessions"), ("GET", "/v1/sessions"),
        ("GET", "/v1/sessions/{id}"), ("DELETE", "/v1/sessions/{id}"), ("POST", "/v1/sessions/{id}/messages"),
        ("GET", "/v1/sessions/{id}/messages"), ("GET", "/v1/sessions/{id}/events"),
        ("GET", "/v1/sessions/{id}/runs/{run_id}"), ("POST", "/v1/sessions/{id}/cancel"),
        ("POST", "/v1/sessions/{id}/exec"), ("GET", "/v1/sessions/{id}/files"),
        ("GET", "/v1/sessions/{id}/files/content"), ("PUT", "/v1/sessions/{id}/files/content"),
        ("DELETE", "/v1/sessions/{id}/files"), ("GET", "/v1/sessions/{id}/sandbox"),
        ("POST", "/v1/sessions/{id}/sandbox/{action}"),
    ]
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    missing = set(contract) - documented
    assert not missing, f"API.md routes missing from the document: {missing}"
    for method, path in sorted(documented):
        concrete = re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], path)
        headers = {"Accept": "text/event-stream"} if path.endswith("/events") else {}
        r = api.req(method, concrete, headers=headers, stream=True, timeout=10)
        code = None
        if r.headers.get("content-type", "").startswith("application/json") and r.status_code >= 400:
            code = r.json()["error"]["code"]
        r.close()
        assert code != "route_not_found", f"documented {method} {path} is not served"
    for method, path in [("GET", "/v1/nothing"), ("PUT", "/v1/agents"), ("GET", "/v2/sessions"),
                         ("POST", f"/v1/sessions/{sid}/exec/extra")]:
        r = api.req(method, path)
        assert r.status_code in (404, 405) and r.json()["error"]["code"] in ("route_not_found", "method_not_allowed")
