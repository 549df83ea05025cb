"""Benchmark: how fast the web portal draws its pages in a fresh browser tab.

Against a running ``tunesmith serve`` (after the README walkthrough, say, so there are jobs to
show), each page is opened in a new headless Chromium context (nothing cached, the key already in
the tab's session) and timed from navigation until the page's content is drawn: the models
table, the jobs table, a finished job's loss chart, the deployments. Reported: the median over
the repeats, the files and bytes the portal served, and the API calls the page made.

    .venv/bin/python bench/portal.py --key "$(cat ~/.tunesmith/admin.key)" [--url URL]

There is no baseline to put beside it (the portals tunesmith stands in for are cloud services);
the figures are absolute. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import CHROMIUM, FLAGS  # noqa: E402 (the tests' own launch settings)


def newest_finished_job(url: str, key: str) -> str:
    jobs = httpx.get(
        f"{url}/v1/fine_tuning/jobs", headers={"Authorization": f"Bearer {key}"}
    ).json()["data"]
    done = [j["id"] for j in jobs if j["status"] == "succeeded"]
    if not done:
        raise SystemExit("no succeeded job to show: run the README walkthrough first")
    return str(done[0])


def measure(browser: Any, url: str, key: str, route: str, ready: str) -> dict[str, Any]:
    context = browser.new_context()
    page = context.new_page()
    page.add_init_script(f"sessionStorage.setItem('tunesmith.key', {json.dumps(key)})")
    responses: list[tuple[str, int]] = []
    page.on(
        "response",
        lambda r: responses.append((r.url, int(r.headers.get("content-length") or 0))),
    )
    start = time.perf_counter()
    page.goto(f"{url}/portal/{route}")
    page.locator(ready).first.wait_for(timeout=60_000)
    seconds = time.perf_counter() - start
    context.close()
    assets = [size for address, size in responses if "/portal/" in address]
    return {
        "seconds": seconds,
        "files": len(assets),
        "bytes": sum(assets),
        "api_calls": sum("/v1/" in address for address, _ in responses),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", required=True)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    job = newest_finished_job(args.url, args.key)
    pages = {
        "models": ("#/models", "#model-list table"),
        "jobs": ("#/jobs", "#job-list table"),
        "job": (f"#/jobs/{job}", "[data-chart='Loss'] svg"),
        "deployments": ("#/deployments", "#deployment-list"),
    }
    results: dict[str, Any] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        for name, (route, ready) in pages.items():
            runs = [measure(browser, args.url, args.key, route, ready) for _ in range(args.repeats)]
            seconds = [r["seconds"] for r in runs]
            results[name] = {**runs[-1], "seconds": round(statistics.median(seconds), 3)}
            print(
                f"{name:12} {results[name]['seconds']:.3f} s median of {len(runs)}, "
                f"{results[name]['files']} files / {results[name]['bytes']:,} bytes, "
                f"{results[name]['api_calls']} API calls",
                flush=True,
            )
        browser.close()
    print(json.dumps({"machine": platform.processor() or platform.machine(), "pages": results}))


if __name__ == "__main__":
    main()
