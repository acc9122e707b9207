#!/usr/bin/env python3
"""Screenshots of a running flaggit dashboard, signed in with a token, through headless
Chromium driven by chromedriver (WebDriver). scripts/quickstart.sh runs it when
FLAGGIT_QUICKSTART_SCREENSHOTS=DIR is set; the README's images come from that run.

usage: dashboard-screenshots.py URL TOKEN_FILE OUT_DIR NAMESPACE/NAME
"""
import base64
import json
import socket
import subprocess
import sys
import time
import urllib.request


def call(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)["value"]


def main():
    url, token_file, out, canary = sys.argv[1:5]
    url = url.rstrip("/")
    token = open(token_file).read().strip()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    driver = subprocess.Popen(["chromedriver", f"--port={port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                call(base, "GET", "/status")
                break
            except OSError:
                time.sleep(0.1)
        caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": {"args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1400,900"]}}}}
        session = call(base, "POST", "/session", caps)["sessionId"]
        s = f"/session/{session}"
        call(base, "POST", s + "/url", {"url": url + "/login"})
        call(base, "POST", s + "/cookie", {"cookie": {"name": "flaggit_token", "value": token}})
        for name, path in [("dashboard-table.png", "/"),
                           ("dashboard-detail.png", f"/canaries/{canary}")]:
            call(base, "POST", s + "/url", {"url": url + path})
            time.sleep(2)  # the page's live stream settles; nothing is asserted on timing
            png = base64.b64decode(call(base, "GET", s + "/screenshot"))
            assert png.startswith(b"\x89PNG"), "not a PNG"
            with open(f"{out}/{name}", "wb") as f:
                f.write(png)
            print(f"wrote {out}/{name}")
        call(base, "DELETE", s)
    finally:
        driver.terminate()


if __name__ == "__main__":
    main()
