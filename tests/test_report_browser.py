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
                    downloads: document.querySelectorAll('a[href^="data:text/csv"][download$=".csv"]').length,
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


LAYOUT_JS = """
(async () => {
  await Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)));
  const W = document.documentElement.clientWidth;
  const contained = el => {
    for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
      const o = getComputedStyle(p).overflowX;
      if (o === 'auto' || o === 'scroll' || o === 'hidden') return true;
    }
    return false;
  };
  const name = el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
    (el.className && typeof el.className === 'string' ? '.' + el.className : '') +
    ' "' + (el.getAttribute('alt') || el.textContent || '').trim().slice(0, 40) + '"';
  const wide = [];
  for (const el of document.body.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > W + 1 && !contained(el)) wide.push(name(el) + ' right=' + Math.round(r.right));
  }
  const els = Array.from(document.querySelectorAll('h1,h2,h3,p,figcaption,img,li,nav a,.card,table,pre'))
    .filter(e => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; });
  const box = e => { const r = e.getBoundingClientRect();
    return {l: r.left + scrollX, t: r.top + scrollY, r: r.right + scrollX, b: r.bottom + scrollY}; };
  const boxes = els.map(box);
  const overlaps = [];
  for (let i = 0; i < els.length; i++) for (let j = i + 1; j < els.length; j++) {
    if (els[i].contains(els[j]) || els[j].contains(els[i])) continue;
    const a = boxes[i], b = boxes[j];
    if (a.l < b.r - 1 && b.l < a.r - 1 && a.t < b.b - 1 && b.t < a.b - 1)
      overlaps.push(name(els[i]) + ' x ' + name(els[j]));
  }
  const images = Array.from(document.images).map(i => ({alt: i.alt, natural: i.naturalWidth,
    shown: Math.round(i.getBoundingClientRect().width), right: Math.round(i.getBoundingClientRect().right)}));
  const sections = Array.from(document.querySelectorAll('section')).map(s => {
    const r = s.getBoundingClientRect();
    return {id: s.id, top: r.top + scrollY, height: r.height}; });
  return JSON.stringify({width: W, scrollWidth: document.documentElement.scrollWidth, wide,
                         overlaps, images, sections});
})()
"""


def screenshot_report(html_path: Path, out_dir: Path, *, width: int = 1400,
                      height: int = 900, max_height: int = 7000) -> dict[str, Any]:  # fmt: skip
    """Open the report at ``width`` CSS px, check its layout and write screenshots.

    Writes ``first_screen.png`` (the first ``height`` px) and ``section_<id>.png`` (each
    section, at most ``max_height`` px of it) into ``out_dir``; returns the layout facts
    (elements wider than the page, overlapping elements, images, sections) and the paths.
    """
    import base64

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bonemet-chromium-") as profile:
        cdp = CDP(chromium_path(), profile)
        try:
            target = cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
                "sessionId"
            ]
            cdp.send("Page.enable", session=session)
            cdp.send("Emulation.setDeviceMetricsOverride",
                     {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                     session=session)  # fmt: skip
            # no scrollbar: the page is laid out at the same width in the full-page captures
            # as when the section positions are measured
            cdp.send("Emulation.setScrollbarsHidden", {"hidden": True}, session=session)
            cdp.send("Page.navigate", {"url": html_path.resolve().as_uri()}, session=session)
            cdp.wait_event("Page.loadEventFired", timeout=90)
            res = cdp.send("Runtime.evaluate", {"expression": LAYOUT_JS, "awaitPromise": True,
                                                "returnByValue": True},
                           session=session, timeout=120)  # fmt: skip
            layout = json.loads(res["result"]["value"])
            shots: dict[str, Path] = {}

            def shoot(name: str, clip: dict | None) -> None:
                params: dict[str, Any] = {"format": "png"}
                if clip is not None:
                    params.update(clip=clip, captureBeyondViewport=True)
                data = cdp.send("Page.captureScreenshot", params, session=session, timeout=120)
                path = out_dir / f"{name}.png"
                path.write_bytes(base64.b64decode(data["data"]))
                shots[name] = path

            shoot("first_screen", None)
            for sec in layout["sections"]:
                h = min(max(sec["height"], 1), max_height)
                shoot(f"section_{sec['id']}",
                      {"x": 0, "y": sec["top"], "width": width, "height": h, "scale": 1})  # fmt: skip
        finally:
            cdp.close()
    layout["screenshots"] = shots
    return layout


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from builders import make_annotated

    a = make_annotated(800, 4, species="mouse", seed=5)
    bm.tl.compare(a, de=False, min_cells=5)
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
    # in-page anchors, or whole tables as CSV downloads from data: URIs (nothing else)
    csv = [h for h in page["links"] if h.startswith("data:text/csv;charset=utf-8;base64,")]
    assert all(h.startswith("#") or h in csv for h in page["links"]), page["links"]
    assert len(csv) >= 5 and len(csv) == page["downloads"], "every CSV link has a download name"
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


def test_report_layout_at_1400_px_with_screenshots(report: Path, tmp_path: Path) -> None:
    """At 1,400 px: nothing wider than the page, no two text or image boxes overlapping,
    every image decoded and inside the page; a screenshot of the first screen and of every
    section (``BONEMET_SCREENSHOTS=dir`` keeps them for a person to look at)."""
    from PIL import Image

    out = Path(os.environ.get("BONEMET_SCREENSHOTS") or tmp_path / "screenshots")
    lay = screenshot_report(report, out)
    assert lay["width"] == 1400 and lay["scrollWidth"] <= lay["width"], lay["scrollWidth"]
    assert not lay["wide"], f"elements wider than the page: {lay['wide'][:10]}"
    assert not lay["overlaps"], f"overlapping elements: {lay['overlaps'][:10]}"
    assert lay["images"] and all(i["natural"] > 0 for i in lay["images"]), lay["images"]
    assert all(0 < i["shown"] and i["right"] <= lay["width"] for i in lay["images"])
    ids = [s["id"] for s in lay["sections"]]
    assert {"summary", "results", "qc", "populations", "signatures"} <= set(ids)
    assert set(lay["screenshots"]) == {"first_screen", *(f"section_{i}" for i in ids)}
    for name, p in lay["screenshots"].items():
        with Image.open(p) as im:
            assert im.width == 1400 and im.height > 50, (name, im.size)
            # not blank: a screenshot of a section shows more than the background
            assert len(im.convert("L").resize((70, 70)).getcolors(4900) or []) > 3, name


def test_csv_download_holds_the_whole_table(report: Path) -> None:
    """A table's download link carries every row, not the first 60 the page shows."""
    import base64
    import io

    import pandas as pd

    text = report.read_text(encoding="utf-8")
    links = dict(
        (name, uri)
        for uri, name in re.findall(r'<a href="(data:text/csv;[^"]+)" download="([^"]+)"', text)
    )
    assert "population_counts.csv" in links and "qc_summary.csv" in links
    for name, uri in links.items():
        df = pd.read_csv(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
        assert len(df) > 0, name
        m = re.search(
            rf"Download {re.escape(name)}</a> <span class=\"note\">\(all ([\d,]+) rows", text
        )
        assert m and int(m.group(1).replace(",", "")) == len(df), name
