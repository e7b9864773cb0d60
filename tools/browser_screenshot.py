# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Screenshot of a web page in headless Chromium, taken once the page says it is ready.

`chromium --headless --screenshot` shoots right after the load event (or after a virtual-time budget that runs ahead
of the server), before a Gradio page has its results. This drives Chromium over the DevTools protocol instead:
navigate, evaluate a JavaScript readiness expression until it is true, then capture.

    python tools/browser_screenshot.py http://127.0.0.1:7860/ shot.png --ready "document.querySelector('img') !== null"

Chromium is the Debian package (`apt-get install -y chromium`); it runs with --no-sandbox (containers, root) and
its DevTools port bound to 127.0.0.1. The DevTools client is the `websockets` package.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

from websockets.sync.client import connect

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                  "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--mute-audio",
                  "--force-device-scale-factor=1", "--remote-debugging-address=127.0.0.1",
                  "--remote-debugging-port=0")


class ScreenshotError(RuntimeError):
    """Chromium could not be started, or the page never became ready."""


@dataclass(frozen=True)
class Screenshot:
    path: Path  # the PNG written
    measured: Any  # the value of `measure_js` when the page was ready (e.g. an element's position), or None


def find_chromium() -> Optional[str]:
    """Path of a Chromium/Chrome executable on PATH (or `CHROMIUM` from the environment), else None."""
    if os.environ.get("CHROMIUM"):
        return shutil.which(os.environ["CHROMIUM"])
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


class _DevTools:
    """A minimal DevTools protocol session on one page target (request/response by id; events are skipped)."""

    def __init__(self, socket: Any) -> None:
        self._socket = socket
        self._ids = itertools.count(1)

    def call(self, method: str, timeout: float = 60.0, **params: Any) -> Dict[str, Any]:
        message_id = next(self._ids)
        self._socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self._socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise ScreenshotError(f"DevTools {method} failed: {reply['error']}")
                return reply.get("result", {})


def _devtools_port(profile: Path, process: subprocess.Popen, timeout: float) -> int:
    """The DevTools port Chromium chose (it writes it to DevToolsActivePort in its profile folder)."""
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ScreenshotError(f"Chromium exited with status {process.returncode} before opening DevTools.")
        if port_file.is_file():
            lines = port_file.read_text().splitlines()
            if lines and lines[0].isdigit():
                return int(lines[0])
        time.sleep(0.1)
    raise ScreenshotError(f"Chromium did not open its DevTools port within {timeout:.0f} s.")


def _page_websocket(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
        targets = json.load(response)
    pages = [target for target in targets if target.get("type") == "page"]
    if not pages:
        raise ScreenshotError("Chromium has no page target to drive.")
    return pages[0]["webSocketDebuggerUrl"]


def screenshot(url: str, output: Path, ready_js: str = "document.readyState === 'complete'",
               window_size: Tuple[int, int] = (1280, 1500), timeout: float = 120.0, settle_s: float = 1.0,
               chromium: Optional[str] = None, extra_flags: Sequence[str] = (),
               measure_js: Optional[str] = None) -> Screenshot:
    """Opens `url` in headless Chromium, waits until `ready_js` evaluates to true (then `settle_s` more for
    animations), and writes a PNG of the `window_size` viewport to `output`; `measure_js` (a JSON-able JavaScript
    expression) is evaluated right before the capture. Chromium is always stopped."""
    executable = chromium or find_chromium()
    if executable is None:
        raise ScreenshotError("No Chromium found: apt-get install -y chromium (or set CHROMIUM).")
    output = Path(output)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = [executable, *CHROMIUM_FLAGS, *extra_flags, f"--user-data-dir={profile}",
                   f"--window-size={window_size[0]},{window_size[1]}", "about:blank"]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            websocket_url = _page_websocket(_devtools_port(Path(profile), process, timeout=60))
            with connect(websocket_url, max_size=None, open_timeout=30) as socket:
                session = _DevTools(socket)
                session.call("Emulation.setDeviceMetricsOverride", width=window_size[0], height=window_size[1],
                             deviceScaleFactor=1, mobile=False)
                session.call("Page.navigate", url=url)
                deadline = time.monotonic() + timeout
                while True:
                    result = session.call("Runtime.evaluate", expression=f"Boolean({ready_js})", returnByValue=True)
                    if result.get("result", {}).get("value") is True:
                        break
                    if time.monotonic() > deadline:
                        raise ScreenshotError(f"{url} was not ready within {timeout:.0f} s ({ready_js}).")
                    time.sleep(0.25)
                time.sleep(settle_s)
                measured = None
                if measure_js is not None:
                    measured = session.call("Runtime.evaluate", expression=measure_js,
                                            returnByValue=True).get("result", {}).get("value")
                shot = session.call("Page.captureScreenshot", format="png")
        finally:
            _stop(process)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(base64.b64decode(shot["data"]))
    return Screenshot(output, measured)


def _stop(process: subprocess.Popen) -> None:
    """Stops Chromium and its helper processes (its own process group), waiting for them."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)  # the group outlives its leader while helpers run
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:
            time.sleep(0.5)  # let the helpers see their parent go, then make sure of them


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("output", type=Path)
    parser.add_argument("--ready", default="document.readyState === 'complete'", help="JavaScript readiness check")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1500)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    print(screenshot(args.url, args.output, args.ready, (args.width, args.height), args.timeout).path)


if __name__ == "__main__":
    main()
