"""Screenshots of a running `mlflow ui`: one study's trials nested under its run, and a few compared.

Needs Playwright's Python package and a Chromium (neither is a kd-study dependency), e.g.
`pip install playwright` and Debian's `apt-get install chromium`; start the README's
`mlflow ui --backend-store-uri sqlite:///mlruns.db --port 5000` first, then

    python scripts/mlflow_ui_screenshots.py scifact_sampling docs/results/mlflow_ui \\
        --compare "params.\\`sampler.k\\` = '8'"

writes `<prefix>_runs.png` (the experiment's runs table, parent run expanded) and
`<prefix>_compare.png` (MLflow's compare page for the trials matching --compare, metrics section).
"""
from __future__ import annotations

import argparse
import json
import urllib.parse
import urllib.request

from study.track.tags import STUDY_KIND_TAG, TRIAL_KIND

BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def api(base: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"{base}/ajax-api/2.0/mlflow/{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def close_assistant(page) -> None:
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.last.click()
        page.wait_for_timeout(800)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", help="the study's experiment name")
    parser.add_argument("prefix", help="output path prefix, e.g. docs/results/mlflow_ui")
    parser.add_argument("--url", default="http://127.0.0.1:5000")
    parser.add_argument("--compare", default="", help="MLflow filter ANDed with trial runs, e.g. params.`sampler.k` = '8'")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    experiment = api(args.url, "experiments/search", {"max_results": 1000, "filter": f"name = '{args.study}'"})
    experiment_id = experiment["experiments"][0]["experiment_id"]
    trial_filter = f"tags.`{STUDY_KIND_TAG}` = '{TRIAL_KIND}'" + (f" and {args.compare}" if args.compare else "")
    runs = api(args.url, "runs/search", {"experiment_ids": [experiment_id], "filter": trial_filter, "max_results": 12})
    run_ids = [run["info"]["run_id"] for run in runs.get("runs", [])]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, headless=True, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1800, "height": 1150})
        page.goto(f"{args.url}/#/experiments/{experiment_id}?workflowType=machine_learning")
        page.wait_for_timeout(7000)
        page.locator("div[role='gridcell']", has_text=args.study).first.locator("button").first.click()  # expand
        page.wait_for_timeout(2000)
        close_assistant(page)
        page.screenshot(path=f"{args.prefix}_runs.png")

        query = urllib.parse.urlencode({"runs": json.dumps(run_ids), "experiments": json.dumps([experiment_id]),
                                       "workflowType": "machine_learning"})
        page.goto(f"{args.url}/#/compare-runs?{query}")
        page.wait_for_timeout(8000)
        close_assistant(page)
        page.get_by_text("Visualizations", exact=True).click()      # collapse the plots ...
        page.get_by_text("Parameters", exact=True).last.click()     # ... and the long parameter table
        page.wait_for_timeout(1000)
        page.get_by_text("Metrics", exact=True).last.scroll_into_view_if_needed()
        page.wait_for_timeout(1000)
        page.screenshot(path=f"{args.prefix}_compare.png")
        browser.close()
    print(f"{args.prefix}_runs.png, {args.prefix}_compare.png ({len(run_ids)} runs compared)")


if __name__ == "__main__":
    main()
