"""Size and load time of report pages, the old single-run page against the new one, in headless Chromium.

Usage:
    python benchmarks/report_page.py RUN [RUN ...] [--baseline-ref be14e96] [--repeats 3]

For the first run folder it writes the single-run page twice: with the report module as it was
at ``--baseline-ref`` (read from git, one embedded PNG per frame and one PNG of all curves) and
with today's (:func:`tmaps.commands.report.write_report`). With several run folders it also writes
today's comparison page of all of them (the old code had none). Pages go to a temporary folder;
the run folders are only read.

Each page is opened ``--repeats`` times in headless Chromium; its load time is the median
of the time from navigation to the moment the page is ready: the load event, and for today's
page also the decoding of every map's first shown frame (``window.tmapsReadyAt``). The budgets
(issue 29): the quickstart's page at most 4 MB, a 3-run comparison at most 8 MB, each ready in
under 2 s. Needs Debian's ``chromium`` and ``chromium-driver`` and selenium. The last line is the figure.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tmaps.commands.report import write_report

ROOT = Path(__file__).resolve().parents[1]
READY = """
var navigation = performance.getEntriesByType('navigation')[0];
if (!navigation || !navigation.loadEventEnd) return null;
if (document.getElementById('report-data') && window.tmapsReadyAt === undefined) return null;
return Math.max(navigation.loadEventEnd, window.tmapsReadyAt || 0);
"""


def baseline_writer(ref: str, folder: Path):
    """``write_report`` of ``tmaps/commands/report.py`` at git ``ref``."""
    source = subprocess.run(["git", "show", f"{ref}:tmaps/commands/report.py"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    path = folder / "report_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("report_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_report


def browser():
    from selenium import webdriver

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        raise SystemExit("needs chromium and chromedriver on the PATH (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for option in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(option)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


def ready_seconds(session, page: Path, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        session.get("about:blank")
        session.get(page.resolve().as_uri())
        deadline = time.monotonic() + 60
        while (ready := session.execute_script(READY)) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{page} was not ready after 60 s")
            time.sleep(0.02)
        times.append(ready / 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of tmaps-train")
    parser.add_argument("--baseline-ref", default="be14e96", help="git revision whose report module is the old way")
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tmaps-report-bench-") as folder:
        folder = Path(folder)
        builders = [("old single-run", lambda out: baseline_writer(arguments.baseline_ref, folder)(arguments.runs[0], out), 1)]
        builders.append(("new single-run", lambda out: write_report(arguments.runs[0], out), 1))
        if len(arguments.runs) > 1:
            builders.append((f"new {len(arguments.runs)}-run comparison", lambda out: write_report(arguments.runs, out), len(arguments.runs)))
        session = browser()
        results = {}
        try:
            print(f"{'page':28} {'runs':>4} {'size MB':>8} {'write s':>8} {'ready s':>8}")
            for index, (name, build, n_runs) in enumerate(builders):
                started = time.process_time()
                page = build(folder / f"page{index}.html")
                written = time.process_time() - started
                size = page.stat().st_size / 1e6
                ready = ready_seconds(session, page, arguments.repeats)
                results[name] = (size, ready)
                print(f"{name:28} {n_runs:>4} {size:>8.2f} {written:>8.1f} {ready:>8.2f}", flush=True)
        finally:
            session.quit()
    (old_size, old_ready), (new_size, new_ready) = results["old single-run"], results["new single-run"]
    figure = f"single-run page {old_size:.2f} MB, ready in {old_ready:.2f} s -> {new_size:.2f} MB, {new_ready:.2f} s"
    if len(results) > 2:
        name = list(results)[-1]
        figure += f"; {name} page {results[name][0]:.2f} MB, ready in {results[name][1]:.2f} s"
    print(figure)


if __name__ == "__main__":
    sys.exit(main())
