"""Viewer benchmark: first load and switching to an uncached step, in headless Chromium.

    python benchmarks/bench_viewer.py [--recording DIR] [--steps 200] [--switches 30] [--loads 5]

Records a run if no recording is given, builds the viewer into it, serves it on 127.0.0.1 and
drives Debian's Chromium (`/usr/bin/chromium`). First load: navigation start to the page's
`acc:ready` mark (every visible panel drawn), a fresh browser context each time. Switch: from
`accViewer.go(n)` until it has drawn step n, timed inside the page, for steps never shown before
and not neighbours of one shown (so not prefetched). Median quoted.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recording", type=Path)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--switches", type=int, default=30)
    ap.add_argument("--loads", type=int, default=5)
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    from capture import Recording
    from viewer import build
    from viewer.server import make_server

    tmp = Path(tempfile.mkdtemp(prefix="acc-viewer-bench-"))
    try:
        path = args.recording
        if path is None:
            path = tmp / "rec"
            subprocess.run([sys.executable, "-c", "from capture.cli import main; main()", "run", "--steps",
                            str(args.steps), "--out", str(path)], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        rec = Recording.open(path)
        build(rec)
        server = make_server(path, 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = server.url

        loads, switches = [], []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            for _ in range(args.loads):
                ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
                page = ctx.new_page()
                page.goto(url + "#step=0")
                page.wait_for_selector('html[data-ready="true"]', state="attached")
                loads.append(page.evaluate("performance.getEntriesByName('acc:ready')[0].startTime"))
                ctx.close()

            ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = ctx.new_page()
            page.goto(url + "#step=0")
            page.wait_for_selector('html[data-ready="true"]', state="attached")
            stride = max(3, rec.steps // (args.switches + 1))
            targets = list(range(stride, rec.steps, stride))[: args.switches]
            random.Random(0).shuffle(targets)
            for n in targets:
                ms = page.evaluate("""async (n) => {
                    const t = performance.now();
                    await window.accViewer.go(n);
                    const root = document.documentElement;
                    if (root.dataset.step !== String(n) || root.dataset.ready !== 'true') throw new Error('not drawn');
                    return performance.now() - t;
                }""", n)
                switches.append(ms)
            browser.close()
        server.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; recording of {rec.steps} steps; Chromium headless")
    print("| figure | median | min | max | target |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| first load until data-ready ({len(loads)} loads) | {statistics.median(loads):.0f} ms | "
          f"{min(loads):.0f} ms | {max(loads):.0f} ms | < 1500 ms |")
    print(f"| switch to an uncached step until drawn ({len(switches)} switches) | {statistics.median(switches):.0f} ms | "
          f"{min(switches):.0f} ms | {max(switches):.0f} ms | < 100 ms |")


if __name__ == "__main__":
    main()
