"""The HTML report in a real headless Chromium (Debian's ``chromium``).

The test drives the browser over the Chrome DevTools Protocol on a pipe
(``--remote-debugging-pipe``: JSON messages, NUL-separated, on file descriptors 3 and 4),
so it needs no websocket library and no network. It checks that the page loads, that
every ``<img>`` decodes (``naturalWidth > 0`` and ``img.decode()`` resolves), that nothing
is requested from outside the file, and that the console shows no error.

A missing browser FAILS the test: run ``make browser`` (``make test`` does it).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

import bonemet as bm

pytestmark = pytest.mark.browser

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--mute-audio",
    "--remote-debugging-pipe",
)


def chromium_path() -> str:
    env = os.environ.get("BONEMET_CHROMIUM")
    for c in ((env,) if env else ()) + CHROMIUM_CANDIDATES:
        p = shutil.which(c) if not os.path.isabs(c) else (c if os.access(c, os.X_OK) else None)
        if p:
            return p
    pytest.fail(
        "Chromium is not installed, so the report cannot be checked in a browser: run "
        "`make browser` (it installs Debian's chromium; `make test` does it first)",
        pytrace=False,
    )


class CDP:
    """A minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe``."""

    def __init__(self, binary: str, profile: str) -> None:
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()
        # move the child's ends above 9 so that placing them on 3 and 4 cannot clobber them
        for name in ("to_chrome_r", "from_chrome_w"):
            fd = locals()[name]
            high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
            os.close(fd)
            if name == "to_chrome_r":
                to_chrome_r = high
            else:
                from_chrome_w = high
        cmd = [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"]
        # the browser reads commands on fd 3 and writes replies on fd 4
        shell = f'exec 3<&{to_chrome_r} 4>&{from_chrome_w} {to_chrome_r}<&- {from_chrome_w}>&-; exec "$@"'
        self.proc = subprocess.Popen(
            ["/bin/bash", "-c", shell, "bash", *cmd],
            pass_fds=(to_chrome_r, from_chrome_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict | None = None, *, session: str | None = None,
             timeout: float = 30.0) -> dict[str, Any]:  # fmt: skip
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        want = self._id
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == want:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, *, timeout: float = 60.0) -> dict[str, Any]:
        for i, ev in enumerate(self.events):
            if ev.get("method") == method:
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            ev = self._read(deadline)
            if ev.get("method") == method:
                return ev
            self.events.append(ev)

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._r], [], [], left)
            if ready:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    err = (
                        self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                    )
                    raise RuntimeError(f"Chromium exited (code {self.proc.poll()}): {err[-2000:]}")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._w, self._r):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.proc.stderr:
            self.proc.stderr.close()


def open_in_chromium(html_path: Path) -> dict[str, Any]:
    """Load ``html_path`` headless; return images, console errors and requested URLs."""
    binary = chromium_path()
    with tempfile.TemporaryDirectory(prefix="bonemet-chromium-") as profile:
        cdp = CDP(binary, profile)
        try:
            target = cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
                "sessionId"
            ]
            for domain in ("Page", "Runtime", "Log", "Network"):
                cdp.send(f"{domain}.enable", session=session)
            cdp.send("Page.navigate", {"url": html_path.resolve().as_uri()}, session=session)
            cdp.wait_event("Page.loadEventFired", timeout=90)
            check = """
                (async () => {
                  const imgs = Array.from(document.images);
                  const decoded = await Promise.all(imgs.map(i => i.decode().then(() => true, () => false)));
                  return JSON.stringify({
                    title: document.title,
                    readyState: document.readyState,
                    sections: Array.from(document.querySelectorAll('section h2')).map(h => h.textContent),
                    images: imgs.map((i, k) => ({alt: i.alt, w: i.naturalWidth, h: i.naturalHeight,
                                                 complete: i.complete, decoded: decoded[k],
                                                 scheme: i.src.split(':')[0]})),
                    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href')),
                    scripts: document.scripts.length,
                    stylesheets: document.querySelectorAll('link[rel=stylesheet]').length,
                  });
                })()
            """
            res = cdp.send(
                "Runtime.evaluate",
                {"expression": check, "awaitPromise": True, "returnByValue": True},
                session=session,
                timeout=60,
            )
            page = json.loads(res["result"]["value"])
            time.sleep(0.3)  # let late console messages arrive
            try:
                cdp.send("Runtime.evaluate", {"expression": "1"}, session=session)
            except Exception:
                pass
        finally:
            events = list(cdp.events)
            cdp.close()
    errors = []
    for ev in events:
        m, p = ev.get("method"), ev.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append(f"console.{p['type']}: {p.get('args')}")
        elif m == "Runtime.exceptionThrown":
            errors.append(f"exception: {p.get('exceptionDetails', {}).get('text')}")
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            errors.append(f"log: {p['entry'].get('text')} ({p['entry'].get('url', '')})")
        elif m == "Network.loadingFailed":
            errors.append(f"network: {p.get('errorText')}")
    requests = [
        ev["params"]["request"]["url"]
        for ev in events
        if ev.get("method") == "Network.requestWillBeSent"
    ]
    page["errors"] = errors
    page["requests"] = requests
    return page


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from builders import make_annotated

    a = make_annotated(800, 3, species="mouse", seed=5)
    # user-provided strings with markup must be shown as text, never interpreted
    a.uns["bonemet"]["warnings"] = [
        *a.uns["bonemet"]["warnings"],
        "<script>alert('x')</script> sample note & <b>bold</b>",
    ]
    out = tmp_path_factory.mktemp("run")
    figs = bm.pl.save_figures(a, out / "figures", formats=("png",), dpi=80, strict=True)
    cfg = bm.load_config({"input": {"path": "in/<samples>.csv"}})
    return bm.report.write_report(
        a,
        out,
        figures=figs,
        config=cfg,
        provenance={"command": "bonemet run <cfg>", "elapsed_s": 75.0},
    )


def test_report_is_one_self_contained_file(report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    assert report.name == "report.html"
    assert not re.search(r"<script\b", text, re.I)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", text, re.I)
    assert "<link" not in text.lower()
    assert text.count('src="data:image/png;base64,') >= 10
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "in/&lt;samples&gt;.csv" in text
    for heading in ("Run summary", "Warnings", "Quality control", "Integration", "Populations",
                    "Signatures", "The review&#x27;s axes", "Parameters and versions"):  # fmt: skip
        assert f">{heading}</h2>" in text, heading
    assert "low gene-set coverage: erythroid_mimicry" in text
    assert "high ambient haemoglobin in sample S1" in text
    assert not list(report.parent.glob(".report.html.*"))


def test_report_renders_in_chromium(report: Path) -> None:
    page = open_in_chromium(report)
    assert page["readyState"] == "complete"
    assert page["title"] == "bonemet report"
    assert "Run summary" in page["sections"] and "Parameters and versions" in page["sections"]
    imgs = page["images"]
    assert len(imgs) >= 10
    bad = [i for i in imgs if not (i["complete"] and i["decoded"] and i["w"] > 0 and i["h"] > 0)]
    assert not bad, f"images that did not decode: {bad}"
    assert {i["scheme"] for i in imgs} == {"data"}
    assert all(h.startswith("#") for h in page["links"]), page["links"]
    assert page["scripts"] == 0 and page["stylesheets"] == 0
    external = [u for u in page["requests"] if not u.startswith(("file:", "data:"))]
    assert not external, f"the report requested {external}"
    assert not page["errors"], f"console errors: {page['errors']}"


def test_browser_check_catches_a_broken_image(tmp_path: Path) -> None:
    """The browser check itself can fail: a truncated PNG does not decode."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><head><title>t</title></head><body>"
        '<img alt="broken" src="data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAA"></body></html>'
    )
    page = open_in_chromium(bad)
    assert page["images"][0]["w"] == 0 and not page["images"][0]["decoded"]


def test_report_from_runner_tables_and_no_figures(tmp_path: Path) -> None:
    """The runner passes CSV paths as tables and may run without figures."""
    from builders import make_annotated

    a = make_annotated(300, 2, species="human", seed=6, labels=False)
    a.uns["bonemet"]["is_counts"] = False
    csv = tmp_path / "tables" / "qc_summary.csv"
    csv.parent.mkdir()
    bm.pp.qc_table(a).to_csv(csv)
    out = bm.report.write_report(a, tmp_path, tables={"qc_summary": csv}, figures=[])
    text = out.read_text()
    assert "Table: qc summary" in text and "removed_high_mito" in text
    assert "<img" not in text
    assert "non-count input" in text
    assert oct(out.stat().st_mode & 0o777) == "0o644"
