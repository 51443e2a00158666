"""Headless Chromium driven through the Chrome DevTools Protocol (one page, one socket).

Debian's ``chromium`` (``/usr/bin/chromium``) is started with a new empty profile and the
flags that keep it from calling home; the test talks to its page target over the
DevTools WebSocket with ``websockets`` (already among the pinned packages).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1400,1600",
)  # fmt: skip
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


def chromium_binary() -> str | None:
    """Where Chromium is, or ``None``."""
    for candidate in (
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class Browser:
    """One headless Chromium with one page.

    :param workdir: where its profile (``--user-data-dir``) and log go.
    """

    def __init__(self, workdir: Path, binary: str) -> None:
        self.workdir = Path(workdir)
        self.binary = binary
        self.proc: subprocess.Popen | None = None
        self._ids = itertools.count(1)
        self._socket = None
        self._stack = contextlib.ExitStack()

    def start(self, timeout: float = 60) -> Browser:
        profile = self.workdir / "profile"
        profile.mkdir(parents=True, exist_ok=True)
        log_path = self.workdir / "chromium.log"
        self.proc = subprocess.Popen(
            [self.binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=open(log_path, "wb"), start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        endpoint = None
        while time.monotonic() < deadline and endpoint is None:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"chromium exited {self.proc.returncode}: {log_path.read_text()}"
                )
            found = _LISTENING.search(log_path.read_text(errors="replace"))
            endpoint = found.group(1) if found else None
            time.sleep(0.2)
        if endpoint is None:
            raise RuntimeError(f"chromium gave no DevTools endpoint: {log_path.read_text()}")
        http = endpoint.split("/devtools/")[0].replace("ws://", "http://")
        with urllib.request.urlopen(f"{http}/json/list", timeout=10) as answer:
            targets = json.loads(answer.read())
        page = next(t for t in targets if t["type"] == "page")
        self._socket = self._stack.enter_context(
            connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=20)
        )
        self.send("Page.enable")
        self.send("Runtime.enable")
        return self

    def stop(self) -> None:
        self._stack.close()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One DevTools command; events that arrive meanwhile are dropped."""
        number = next(self._ids)
        self._socket.send(json.dumps({"id": number, "method": method, "params": params or {}}))
        while True:
            message = json.loads(self._socket.recv(timeout=60))
            if message.get("id") == number:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60) -> Any:
        """Poll ``expression`` until it is truthy; return its value (write ``!!node`` for a
        DOM node, which comes back as an empty object)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except RuntimeError:
                value = None
            if value:
                return value
            time.sleep(0.3)
        raise AssertionError(f"not true after {timeout}s: {expression}")

    def open(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})
        self.wait_for(
            f"document.readyState === 'complete' && location.href.startsWith({url[:30]!r})"
        )

    def type_into(self, selector: str, text: str) -> None:
        """Focus an input and type as a person does (React sees real input events)."""
        self.wait_for(f"!!document.querySelector({selector!r})")
        self.evaluate(f"document.querySelector({selector!r}).focus()")
        self.send("Input.insertText", {"text": text})

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        path.write_bytes(base64.b64decode(data["data"]))
        return path
