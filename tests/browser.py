"""Open a page in a real headless Chromium over the DevTools protocol (127.0.0.1 only): collect
console errors and exceptions, evaluate an expression, take a full-page screenshot."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageResult:
    errors: list[str]
    value: object  # the evaluated expression
    screenshot: bytes


def _kill_group(proc: subprocess.Popen) -> None:
    import os
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
            time.sleep(0.2)  # its helpers leave with it
        except subprocess.TimeoutExpired:
            continue


def open_page(url: str, expression: str, *, width: int = 1000, height: int = 900, timeout: float = 60) -> PageResult:
    from websockets.sync.client import connect

    exe = chromium()
    assert exe, "chromium is not installed (.ci/run installs it: apt-get install chromium)"
    # Chromium's helper processes may still write into the profile as it goes: the whole process
    # group is killed, and a file they leave behind does not fail the test.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen([exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                 "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                                 f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.time() + timeout
            while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
                assert time.time() < deadline and proc.poll() is None, "chromium did not start"
                time.sleep(0.1)
            port, path = port_file.read_text().splitlines()[:2]
            with connect(f"ws://127.0.0.1:{port}{path}", max_size=None) as ws:
                return _drive(ws, url, expression, deadline)
        finally:
            _kill_group(proc)


def _drive(ws, url: str, expression: str, deadline: float) -> PageResult:
    counter = iter(range(1, 1 << 30))
    errors: list[str] = []
    events: list[dict] = []
    session = None

    def send(method: str, params: dict | None = None) -> dict:
        msg_id = next(counter)
        msg = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        ws.send(json.dumps(msg))
        while True:
            reply = json.loads(ws.recv(timeout=max(1.0, deadline - time.time())))
            if reply.get("id") == msg_id:
                assert "error" not in reply, reply["error"]
                return reply["result"]
            events.append(reply)

    target = send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log"):
        send(f"{domain}.enable")
    send("Page.navigate", {"url": url})
    loaded = False
    while not loaded:
        while events:
            event = events.pop(0)
            loaded |= event.get("method") == "Page.loadEventFired"
            _collect_error(event, errors)
        if not loaded:
            assert time.time() < deadline, "page did not load"
            events.append(json.loads(ws.recv(timeout=max(1.0, deadline - time.time()))))
    time.sleep(0.5)  # let late errors arrive
    value = send("Runtime.evaluate", {"expression": expression, "returnByValue": True})["result"].get("value")
    shot = send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
    for event in events:
        _collect_error(event, errors)
    return PageResult(errors, value, base64.b64decode(shot))


def _collect_error(event: dict, errors: list[str]) -> None:
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        errors.append(json.dumps(params.get("args")))
    elif method == "Runtime.exceptionThrown":
        errors.append(json.dumps(params.get("exceptionDetails")))
    elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
        errors.append(params["entry"].get("text", ""))
