"""Screenshots of a run's report page in headless Chromium, as the README shows it.

    python scripts/report_screenshot.py <run dir>/report.html docs/figures/report_page.png
    python scripts/report_screenshot.py <run dir>/report.html docs/figures/report_page_maps.png --section profiles/map/conv3
    python scripts/report_screenshot.py <study>/report.html docs/figures/report_comparison.png --section topography

Needs Debian's ``chromium`` and ``chromium-driver`` (as ``tests/test_report.py`` does) and selenium
(the ``dev`` extra). ``--section`` scrolls to the element of that id (a map's key, or a section: ``runs``,
``phoneme-maps``, ``topography``, ``metrics``, ``maps``) first.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--section", default=None, help="id of the element to scroll to, e.g. profiles/map/conv3")
    parser.add_argument("--size", type=int, nargs=2, default=[1400, 1350], metavar=("WIDTH", "HEIGHT"))
    arguments = parser.parse_args()
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        raise SystemExit("needs chromium and chromedriver on the PATH (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for option in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={arguments.size[0]},{arguments.size[1]}"):
        options.add_argument(option)
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
    try:
        browser.get(arguments.page.resolve().as_uri())
        WebDriverWait(browser, 60).until(lambda page: page.execute_script("return document.documentElement.dataset.ready") == "true")
        if arguments.section:
            browser.execute_script("arguments[0].scrollIntoView(true);", browser.find_element(By.ID, arguments.section))
        time.sleep(0.5)  # let the scrolled-to part paint
        arguments.output.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(arguments.output))
    finally:
        browser.quit()
    print(arguments.output)


if __name__ == "__main__":
    main()
