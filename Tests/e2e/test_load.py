"""Thousands of idle, stalled and slow clients do not stop agentd from
serving everyone else: 2,000 event streams replaying a large transcript to
clients that never read, and 200 clients trickling request heads, while an
ordinary client keeps being answered and the daemon's memory stays bounded.
(The latency ratio is a benchmark: `scripts/bench streams`, BENCHMARKS.md.)"""
import asyncio
import time

from streamload import fill_transcript, scenario
from test_hostile import alive


def test_stalled_streams_and_slow_clients_leave_others_served(daemon):
    api = daemon.api
    sid = api.session(api.agent()["id"])["id"]
    asyncio.run(fill_transcript(daemon.port, daemon.admin_key, sid, 925_000))
    assert api.get(f"/v1/sessions/{sid}")["last_seq"] >= 100
    result = asyncio.run(scenario(daemon.port, daemon.admin_key, daemon.proc.pid, sid, f"/v1/sessions/{sid}",
                                  streams=2000, slow=200, samples=500))
    print(result)
    assert result["streams_opened"] == 2000, result
    assert result["slow_connected"] >= 200, result
    # Everyone else is still served, promptly (generous: a debug build on a
    # loaded CI machine; the ratio itself is benchmarked).
    assert result["loaded"]["max_ms"] < 2000, result
    # 2,000 replays of a 925 KB transcript held open: bounded memory.
    assert result["loaded_rss_mib"] - result["idle_rss_mib"] < 200, result
    alive(daemon)


def test_many_large_request_bodies_share_a_bounded_budget(daemon):
    """40 concurrent exec requests of 16 MiB each (the review's finding took
    the daemon from 396 MB to 1.3 GB): they wait for room in the body budget
    (64 MiB by default) instead of all sitting in memory at once, and a body
    is scanned and decoded where it lies.  Measured: about +112 MiB at the
    peak (BENCHMARKS.md); the issue's target is under +200 MiB."""
    import concurrent.futures
    import json
    from streamload import rss_mib
    api = daemon.api
    sid = api.session(api.agent()["id"])["id"]
    api.exec(sid, "true")
    idle = rss_mib(daemon.proc.pid)
    body = json.dumps({"command": "wc -c", "stdin": "x" * (16 << 20)}).encode()
    peak = [idle]
    stop = []

    def sample():
        while not stop:
            peak[0] = max(peak[0], rss_mib(daemon.proc.pid))
            time.sleep(0.05)

    def send(_):
        r = api.req("POST", f"/v1/sessions/{sid}/exec", data=body, headers={"Content-Type": "application/json"},
                    timeout=120)
        return r.status_code, (r.json().get("stdout", "").strip() if r.status_code == 200 else r.text[:200])

    import threading
    t = threading.Thread(target=sample)
    t.start()
    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        results = list(pool.map(send, range(40)))
    stop.append(1)
    t.join()
    print({"idle_rss_mib": idle, "peak_rss_mib": peak[0], "answered": sorted(code for code, _ in results)})
    # Every request is answered: done, or told to come back (503 + Retry-After).
    assert all(code in (200, 503) for code, _ in results), results
    assert sum(1 for code, out in results if code == 200 and out == str(16 << 20)) >= 10, results
    assert peak[0] - idle < 200, (idle, peak[0])
    alive(daemon)
