"""Take a screenshot of `airlab dashboard` with headless Chromium (PNG, e.g. for docs/).

    python scripts/dashboard_screenshot.py                      # the lab of AIRLAB_HOME/AIRLAB_DB
    python scripts/dashboard_screenshot.py --db URL --out docs/dashboard.png
    python scripts/dashboard_screenshot.py --url http://127.0.0.1:8765/   # a dashboard running
    python scripts/dashboard_screenshot.py --experiment NAME    # that experiment, not the live one

Without ``--url`` it starts its own read-only dashboard on a free port (so it can be run while
`airlab auto` works on the same store) and stops it after. Chromium is Debian's
(``apt-get install chromium``); nothing is downloaded. The page follows the experiment running
now unless ``--experiment`` names one.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--disable-dev-shm-usage"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="a dashboard already running (default: start one)")
    ap.add_argument("--db", help="the store's SQLAlchemy URL (default: AIRLAB_DB / AIRLAB_HOME)")
    ap.add_argument("--experiment", help="show this experiment (default: the one running now)")
    ap.add_argument("--out", default="docs/dashboard.png")
    ap.add_argument("--size", default="1600x1250", help="window WIDTHxHEIGHT in pixels")
    ap.add_argument("--wait", type=float, default=8.0,
                    help="seconds of page time before the picture (first data, plot drawn)")
    args = ap.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("error: chromium not found (apt-get install chromium)", file=sys.stderr)
        return 2
    w, _, h = args.size.partition("x")
    server = None
    url = args.url
    if url is None:
        airlab = shutil.which("airlab", path=str(Path(sys.executable).parent)) or "airlab"
        cmd = [airlab, *(["--db", args.db] if args.db else []), "dashboard", "--port", "0"]
        server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert server.stdout is not None
        line = server.stdout.readline()
        m = re.search(r"(http://\S+/)", line)
        if m is None:
            print(f"error: the dashboard did not start: {line}"
                  f"{server.stderr.read() if server.stderr else ''}", file=sys.stderr)
            return 2
        url = m.group(1)
    if args.experiment:
        url = url.rstrip("/") + "/#exp=" + quote(args.experiment, safe="")
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory() as profile:
            r = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}",
                                f"--window-size={w},{h}",
                                f"--virtual-time-budget={int(args.wait * 1000)}",
                                f"--screenshot={out}", url],
                               capture_output=True, text=True, timeout=180)
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)
    if not out.is_file():
        print(f"error: Chromium wrote no screenshot: {r.stderr[-500:]}", file=sys.stderr)
        return 1
    print(f"{out} ({out.stat().st_size:,} bytes) of {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
