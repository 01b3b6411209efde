"""A scripted OpenAI-compatible chat completions server for the agent-run tests.

It plays the model: what it answers depends on the scenario word in the
conversation's first user message and on how many assistant turns the
request already holds, so a run's every step is predictable.  It answers
streamed (SSE, tool-call arguments split across chunks) or not, as asked.
Every request is recorded for the tests to inspect.

Scenarios (a word in the user's message):
  build     exec (echo into a file), then write_file, then a final answer
  slow      exec `sleep 30`, then a final answer saying what the tool returned
  badargs   a tool call whose arguments are not JSON, then a final answer
  bigout    exec printing 100 KB, then a final answer
  loop      exec `true` forever (for max_steps)
  flaky     429 with Retry-After: 1 on the first request of the run, then an answer
  slowstream  a long final answer, streamed slowly (0.15 s a word)
  broken    400 always
  hugetimeout  exec with timeout_s 1e308, then -1e308, then a final answer
  hugeusage  a final answer whose usage counts are absurd (1e300, negative)
  toolfuzz SEED STEPS  STEPS tool calls of random names and argument shapes
  (other)   a final answer echoing the message
The summarizer's requests (system prompt "You compact...") get "SUMMARY-TEXT".
"""
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Script:
    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        self.flaky_seen = set()

    def turn(self, body):
        msgs = body.get("messages", [])
        if msgs and msgs[0].get("role") == "system" and str(msgs[0].get("content", "")).startswith("You compact"):
            return {"text": "SUMMARY-TEXT"}
        users = [m for m in msgs if m.get("role") == "user" and not str(m.get("content", "")).startswith("[Summary")]
        text = str(users[-1].get("content", "")) if users else ""
        # Assistant turns since the last user message.
        last_user = max(i for i, m in enumerate(msgs) if m.get("role") == "user") if users else 0
        step = sum(1 for m in msgs[last_user:] if m.get("role") == "assistant")
        last_tool = next((m for m in reversed(msgs) if m.get("role") == "tool"), None)
        tool_out = str(last_tool.get("content", "")) if last_tool else ""

        def call(name, args, raw=None):
            return {"tool": {"id": "call_" + uuid.uuid4().hex[:8], "name": name,
                             "arguments": raw if raw is not None else json.dumps(args)}}

        if "build" in text:
            if step == 0:
                return call("exec", {"command": "echo hello from exec > /workspace/hello.txt && cat /workspace/hello.txt"})
            if step == 1:
                return call("write_file", {"path": "notes/result.md", "content": "# Result\nexec said: " + tool_out.split("\n")[0] + "\n"})
            return {"text": "All done. I ran a command and wrote notes/result.md for you."}
        if "slowstream" in text:
            return {"text": " ".join("word%d" % i for i in range(40)), "delay": 0.15}
        if "slow" in text:
            if step == 0:
                return call("exec", {"command": "sleep 30; echo finished"})
            return {"text": "The tool said: " + tool_out[:200]}
        if "badargs" in text:
            if step == 0:
                return call("exec", None, raw="{this is not json")
            return {"text": "Tool answered: " + tool_out[:200]}
        if "bigout" in text:
            if step == 0:
                return call("exec", {"command": "yes abcdefghij | head -c 100000"})
            return {"text": "Output length seen: %d" % len(tool_out)}
        if text.startswith("toolfuzz"):
            # Random tool calls of every shape: `toolfuzz SEED STEPS`.
            _, seed, steps = text.split()
            if step >= int(steps):
                return {"text": "fuzzed %s calls" % steps}
            name, raw = fuzz_tool_call(int(seed) * 1000 + step)
            return call(name, None, raw=raw)
        if "hugetimeout" in text:
            # A model (or a prompt injection) asking for an absurd timeout:
            # the tool must answer, not take the daemon down.
            if step == 0:
                return call("exec", None, raw='{"command": "echo still-alive", "timeout_s": 1e308}')
            if step == 1:
                return call("exec", None, raw='{"command": "echo again", "timeout_s": -1e308}')
            return {"text": "Tool answered: " + tool_out[:200]}
        if text.startswith("longwork"):
            # `longwork N`: a tool call of N seconds, then a model step of N
            # seconds, then a look at what the first call left in /tmp.
            n = int(text.split()[1])
            if step == 0:
                return call("exec", {"command": "echo alive > /tmp/marker; sleep %d; echo slept" % n})
            if step == 1:
                return dict(call("exec", {"command": "cat /tmp/marker"}), think=n)
            return {"text": "marker: " + tool_out.strip()[:100]}
        if "hugeusage" in text:
            return {"text": "counted", "usage": {"prompt_tokens": 1e300, "completion_tokens": -5,
                                                  "total_tokens": 1e300}}
        if "loop" in text:
            return call("exec", {"command": "true"})
        if "flaky" in text:
            key = text
            with self.lock:
                first = key not in self.flaky_seen
                self.flaky_seen.add(key)
            if first:
                return {"status": 429, "retry_after": "1"}
            return {"text": "recovered after a 429"}
        if "broken" in text:
            return {"status": 400}
        return {"text": "echo: " + text}


def fuzz_value(rng, depth=0):
    """A random JSON value of any shape, biased to what breaks parsers and
    arithmetic: huge and tiny numbers, unicode, NUL, very long strings."""
    kinds = ["str", "num", "int", "bool", "null", "list", "obj", "weird"]
    k = rng.choice(kinds if depth < 3 else kinds[:5])
    if k == "str":
        alphabet = ["a", "/", "..", "\x00", "\u00e9", "\U0001f600", " ", "\n", "$", "*", "'", '"', "\\", "%s"]
        return "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 5, 40, 300])))
    if k == "num":
        return rng.choice([1e308, -1e308, 1e-308, 0.5, -0.0, 3.7, 86400.5, 1e20])
    if k == "int":
        return rng.choice([0, -1, 1, 2 ** 31, 2 ** 63 - 1, -(2 ** 63), 2 ** 64, 10 ** 30])
    if k == "bool":
        return rng.random() < 0.5
    if k == "null":
        return None
    if k == "list":
        return [fuzz_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if k == "obj":
        return {rng.choice(["path", "command", "x", "content"]): fuzz_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    return "A" * rng.choice([1000, 100000])


def fuzz_tool_call(seed):
    """(tool name, raw arguments) for one fuzzed call: valid names with
    arguments of random shapes, unknown names, and text that is not JSON."""
    import random
    rng = random.Random(seed)
    tools = ["exec", "read_file", "write_file", "list_files", "edit_file"]
    keys = {"exec": ["command", "cwd", "timeout_s"], "read_file": ["path"], "write_file": ["path", "content"],
            "list_files": ["path"], "edit_file": ["path", "old_string", "new_string"]}
    name = rng.choice(tools + ["no_such_tool", "", "exec\u0000"])
    shape = rng.random()
    if shape < 0.1:
        return name, rng.choice(["{not json", "[]", "null", "42", '"str"', "", "{" * 200, '{"a":1,"a":2}'])
    args = {}
    for k in keys.get(name, ["x"]):
        if rng.random() < 0.8:
            args[k] = fuzz_value(rng)
    if name == "exec" and rng.random() < 0.5:
        args["command"] = rng.choice(["echo ok", "cat /proc/self/status | head -3", "printf '\\x00\\xff'", "true"])
    if rng.random() < 0.2:
        args[rng.choice(["extra", "__proto__", ""])] = fuzz_value(rng)
    return name, json.dumps(args)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    script = None

    def log_message(self, *a):
        pass

    def reply(self, status, body, headers=None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.rstrip("/").endswith("/models"):
            return self.reply(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})
        self.reply(404, {"error": {"message": "not found"}})

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        if not self.path.rstrip("/").endswith("/chat/completions"):
            return self.reply(404, {"error": {"message": "not found"}})
        with self.script.lock:
            self.script.requests.append({"body": body, "headers": dict(self.headers)})
        turn = self.script.turn(body)
        time.sleep(turn.get("think", 0))
        if "status" in turn:
            headers = {"Retry-After": turn["retry_after"]} if "retry_after" in turn else {}
            return self.reply(turn["status"], {"error": {"message": "scripted failure %d" % turn["status"],
                                                         "type": "scripted"}}, headers)
        prompt_tokens = max(1, len(json.dumps(body.get("messages", []))) // 4)
        completion_tokens = 7
        model = body.get("model", "scripted")
        cid = "chatcmpl-" + uuid.uuid4().hex[:12]
        usage = turn.get("usage") or {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                      "total_tokens": prompt_tokens + completion_tokens}
        if not body.get("stream"):
            msg = {"role": "assistant", "content": turn.get("text")}
            finish = "stop"
            if "tool" in turn:
                t = turn["tool"]
                msg["tool_calls"] = [{"id": t["id"], "type": "function",
                                      "function": {"name": t["name"], "arguments": t["arguments"]}}]
                finish = "tool_calls"
            return self.reply(200, {"id": cid, "object": "chat.completion", "created": int(time.time()),
                                    "model": model, "choices": [{"index": 0, "message": msg, "finish_reason": finish}],
                                    "usage": usage})
        # Streamed: text in small pieces, tool-call arguments split in three.
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()

        def chunk(delta, finish=None, extra=None):
            c = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if extra:
                c.update(extra)
            self.wfile.write(b"data: " + json.dumps(c).encode() + b"\n\n")
            self.wfile.flush()

        chunk({"role": "assistant", "content": ""})
        if "tool" in turn:
            t = turn["tool"]
            a = t["arguments"]
            n = max(1, len(a) // 3)
            parts = [a[:n], a[n:2 * n], a[2 * n:]]
            chunk({"tool_calls": [{"index": 0, "id": t["id"], "type": "function",
                                   "function": {"name": t["name"], "arguments": ""}}]})
            for p in parts:
                time.sleep(0.02)
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]})
            chunk({}, "tool_calls")
        else:
            words = turn["text"].split(" ")
            for i, w in enumerate(words):
                time.sleep(turn.get("delay", 0.05))
                chunk({"content": w + (" " if i < len(words) - 1 else "")})
            chunk({}, "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            c = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                 "choices": [], "usage": usage}
            self.wfile.write(b"data: " + json.dumps(c).encode() + b"\n\n")
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


def serve(port=0):
    script = Script()
    handler = type("H", (Handler,), {"script": script})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, script


if __name__ == "__main__":
    import sys
    s, _ = serve(int(sys.argv[1]) if len(sys.argv) > 1 else 8999)
    print("scripted model on", s.server_address, flush=True)
    threading.Event().wait()
