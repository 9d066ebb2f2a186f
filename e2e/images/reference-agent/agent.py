"""The reference agent: a small real agent that follows docs/agent-contract.md, written with the
official `openai` SDK and nothing but the environment the operator gives it.

As an AgentDeployment's agent (no task input in the environment) it serves HTTP on $PORT
(default 8080):
  GET  /healthz       200 while the process runs
  GET  /readyz        200 once the provider config is mounted, 503 while draining
  POST /v1/ask        {"input": "..."} -> {"answer": "...", "model": "..."}, asked through the router
  GET  /stats         the outcomes of the requests it made (see AGENT_LOAD below)

As an AgentTask's worker (AGENT_OPERATOR_TASK_INPUT_FILE set) it asks the LLM about its input,
writes the answer to $AGENT_OPERATOR_RESULT_FILE and exits 0; it exits 69 when no provider
answered (the operator then waits for a Ready provider instead of counting the attempt), and
65 when the input is empty.

Parameters a task may set, to exercise the operator's handling of failing workers:
  exitCode  exit with this code after writing `message` (or the answer) as the result
  message   the result text written before a forced exit
  sleepSeconds  wait this long after the answer before finishing (to outlive a timeout)

AGENT_MAX_TOKENS=N sets max_tokens on every request (the SDK's default sends none).

AGENT_LOAD=N makes a served agent ask the router N times a second in the background and count
each outcome; on exit the counts become the container's termination message, so that a test can
see whether any request failed across a rollout.

On SIGTERM it stops taking requests (readyz turns 503), lets those in flight finish and exits:
Python as PID 1 has no default SIGTERM handling, so without this every deletion would wait out
the whole grace period.
"""

import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai

PROVIDERS_FILE = os.environ.get("AGENT_OPERATOR_PROVIDERS_FILE", "/etc/agentoperator/providers.json")
MODEL = os.environ.get("AGENT_MODEL", "gpt-4o-mini")
MAX_TOKENS = int(os.environ["AGENT_MAX_TOKENS"]) if os.environ.get("AGENT_MAX_TOKENS") else None
EX_DATAERR = 65
EX_UNAVAILABLE = 69

draining = threading.Event()
stats_lock = threading.Lock()
stats = {"ok": 0, "failed": 0, "errors": []}


def log(message, **fields):
    print(json.dumps({"message": message, **fields}), flush=True)


def client():
    # OPENAI_BASE_URL and OPENAI_API_KEY come from the operator: the router on loopback and a
    # placeholder key. The SDK's own retries stay off, so every failure is the router's answer.
    return openai.OpenAI(max_retries=0, timeout=30)


def ask(question):
    limits = {"max_tokens": MAX_TOKENS} if MAX_TOKENS else {}
    answer = client().chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You are a support agent. Answer briefly."},
            {"role": "user", "content": question},
        ],
        **limits,
    )
    return answer.choices[0].message.content or "", answer.model


def record(ok, error=None):
    with stats_lock:
        if ok:
            stats["ok"] += 1
        else:
            stats["failed"] += 1
            stats["errors"] = (stats["errors"] + [error])[-5:]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/healthz":
            self.reply(200, {"status": "ok"})
        elif self.path == "/readyz":
            ready = os.path.exists(PROVIDERS_FILE) and not draining.is_set()
            self.reply(200 if ready else 503, {"ready": ready})
        elif self.path == "/stats":
            with stats_lock:
                self.reply(200, dict(stats))
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self):
        if self.path != "/v1/ask":
            self.reply(404, {"error": "not found"})
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
            question = json.loads(self.rfile.read(length) or b"{}").get("input", "")
        except (ValueError, AttributeError):
            self.reply(400, {"error": "the body must be JSON with an `input` string"})
            return
        try:
            answer, model = ask(question)
        except openai.APIError as error:
            record(False, type(error).__name__)
            self.reply(502, {"error": str(error)})
            return
        record(True)
        self.reply(200, {"answer": answer, "model": model})

    def log_message(self, *args):
        pass


def load(rate):
    while not draining.is_set():
        try:
            ask("ping")
            record(True)
        except openai.APIError as error:
            record(False, f"{type(error).__name__}: {error}"[:200])
        time.sleep(1 / rate)


def serve():
    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Handler)
    server.daemon_threads = True

    def stop(signum, _frame):
        log("draining", signal=signum)
        draining.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    rate = float(os.environ.get("AGENT_LOAD", "0"))
    if rate > 0:
        threading.Thread(target=load, args=(rate,), daemon=True).start()
    log("serving", port=server.server_address[1], load=rate)
    server.serve_forever()
    with stats_lock:
        final = dict(stats)
    log("stopped", **final)
    # The kubelet keeps this file as the container's termination message, so the outcome of
    # every request the pod made outlives the pod (a test reads it across a rollout).
    try:
        with open("/dev/termination-log", "w") as f:
            json.dump(final, f)
    except OSError:
        pass


def work():
    result_file = os.environ.get("AGENT_OPERATOR_RESULT_FILE", "/dev/termination-log")
    with open(os.environ["AGENT_OPERATOR_TASK_INPUT_FILE"]) as f:
        question = f.read()
    parameters = {}
    parameters_file = os.environ.get("AGENT_OPERATOR_TASK_PARAMETERS_FILE")
    if parameters_file and os.path.exists(parameters_file):
        with open(parameters_file) as f:
            parameters = json.load(f)

    def finish(code, result):
        with open(result_file, "w") as f:
            f.write(result)
        log("finished", exit_code=code, attempt=os.environ.get("AGENT_OPERATOR_TASK_ATTEMPT"))
        sys.exit(code)

    if not question.strip():
        finish(EX_DATAERR, "the task input is empty")
    try:
        answer, model = ask(question)
    except (openai.APIConnectionError, openai.APIStatusError) as error:
        finish(EX_UNAVAILABLE, f"no LLM provider answered: {type(error).__name__}")
    if "sleepSeconds" in parameters:
        # Past the task's timeout: the attempt ends with this request spent.
        time.sleep(float(parameters["sleepSeconds"]))
    if "exitCode" in parameters:
        finish(int(parameters["exitCode"]), parameters.get("message", answer))
    finish(0, f"{answer}\n(model: {model})")


if __name__ == "__main__":
    if os.environ.get("AGENT_OPERATOR_TASK_INPUT_FILE"):
        work()
    else:
        serve()
