"""Many slow and idle clients against one agentd, and the latency of an
ordinary client beside them: used by test_load.py (assertions) and by
`scripts/bench streams` (the benchmark of BENCHMARKS.md).

Raw asyncio sockets, no HTTP library: thousands of connections in one
process, each doing exactly what the scenario says (an event stream that is
never read, a request head that trickles in a byte at a time)."""
import asyncio
import json
import resource
import statistics
import time


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def http_request(reader, writer, method, path, key, body=None):
    """One request on a keep-alive connection; returns (status, body)."""
    head = f"{method} {path} HTTP/1.1\r\nHost: load\r\nAuthorization: Bearer {key}\r\n"
    data = b""
    if body is not None:
        data = json.dumps(body).encode()
        head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    writer.write(head.encode() + b"\r\n" + data)
    await writer.drain()
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value.strip())
    payload = await reader.readexactly(length) if length else b""
    return status, payload


async def latencies(port, key, path, count):
    """`count` sequential requests on one connection: seconds each."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = []
    try:
        for _ in range(count):
            t0 = time.perf_counter()
            status, _ = await http_request(reader, writer, "GET", path, key)
            out.append(time.perf_counter() - t0)
            assert status == 200, status
    finally:
        writer.close()
    return out


def summary(samples):
    s = sorted(samples)
    return {"p50_ms": statistics.median(s) * 1000, "p99_ms": s[min(len(s) - 1, int(len(s) * 0.99))] * 1000,
            "max_ms": s[-1] * 1000, "n": len(s)}


async def stalled_stream(port, key, sid, opened):
    """An event stream asked for from the start (the whole transcript is
    replayed) whose client reads the answer's head and then nothing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 16)
    writer.write(f"GET /v1/sessions/{sid}/events HTTP/1.1\r\nHost: load\r\nAuthorization: Bearer {key}\r\n"
                 f"Accept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    line = await reader.readline()
    if b" 200 " in line:
        opened.append(1)
    return writer


async def slow_header_client(port, stop, counts):
    """A request head sent a header line a second, forever; reconnects when
    agentd closes it (its header deadline)."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /v1/teams HTTP/1.1\r\nHost: load\r\n")
            counts["connected"] += 1
            while not stop.is_set():
                await asyncio.sleep(1)
                writer.write(b"X-Slow: a\r\n")
                await writer.drain()
                if reader.at_eof():
                    break
        except (ConnectionError, OSError):
            counts["closed"] += 1
            await asyncio.sleep(0.2)
        else:
            counts["closed"] += 1
            writer.close()


async def scenario(port, key, pid, sid, probe_path, streams=2000, slow=200, samples=2000):
    """Baseline latency and memory, then the same with `streams` stalled
    replays and `slow` slow-header clients attached."""
    raise_fd_limit()
    await latencies(port, key, probe_path, 200)  # warm up
    idle_rss = rss_mib(pid)
    base = summary(await latencies(port, key, probe_path, samples))

    opened = []
    writers = []
    for i in range(0, streams, 200):
        writers += await asyncio.gather(*[stalled_stream(port, key, sid, opened)
                                          for _ in range(min(200, streams - i))])
    stop = asyncio.Event()
    counts = {"connected": 0, "closed": 0}
    slow_tasks = [asyncio.create_task(slow_header_client(port, stop, counts)) for _ in range(slow)]
    await asyncio.sleep(2)
    loaded_rss = rss_mib(pid)
    loaded = summary(await latencies(port, key, probe_path, samples))
    peak_rss = max(loaded_rss, rss_mib(pid))
    stop.set()
    for t in slow_tasks:
        t.cancel()
    await asyncio.gather(*slow_tasks, return_exceptions=True)
    for w in writers:
        w.close()
    return {"baseline": base, "loaded": loaded, "idle_rss_mib": idle_rss, "loaded_rss_mib": peak_rss,
            "streams_opened": len(opened), "slow_connected": counts["connected"], "slow_closed": counts["closed"]}


async def fill_transcript(port, key, sid, target_bytes, message_bytes=9000):
    """Messages until the session's transcript holds about `target_bytes`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        text = ("transcript line " * (message_bytes // 16))[:message_bytes]
        for _ in range(target_bytes // message_bytes):
            status, _ = await http_request(reader, writer, "POST", f"/v1/sessions/{sid}/messages", key,
                                           {"content": text})
            assert status == 202, status
    finally:
        writer.close()
