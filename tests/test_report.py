"""``report.html`` of a real tiny training run, opened in a real headless Chromium (Selenium)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tmaps.commands.report import write_report

TINY_RUN = [
    "data.source.n_utterances={train:24,dev:6,test:6,test_unseen:6}",
    "data.source.words_per_utterance=[2,4]",
    "data.batching.num_workers=0",
    "data.batching.max_batch_seconds=8",
    "model.channels=[32,32,32,32,32,32,32,32,64,64]",
    "topo=weight_similarity",
    "logger=none",
    "trainer.max_epochs=2",
    "callbacks.activation_profiles.n_probe_utterances=6",
    "callbacks.metric_history.every_n_steps=1",
]


def run_module(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", *arguments], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{arguments} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> tuple[Path, str]:
    """A real `tmaps-train` run with a topographic loss and the default callbacks, and what it printed."""
    root = tmp_path_factory.mktemp("report")
    result = run_module("tmaps.commands.train", *TINY_RUN, f"paths.data_dir={root / 'data'}", f"paths.root_dir={root}", "hydra.run.dir=run", cwd=root)
    return root / "run", result.stdout


def test_training_ends_with_the_report_and_names_its_maps_last(trained_run):
    run_dir, stdout = trained_run
    last_lines = stdout.strip().splitlines()[-8:]
    assert last_lines[-1] == f"  report      {run_dir / 'report.html'}"
    named = {Path(line.split()[-1]).parent.name for line in last_lines if line.strip().startswith("map ")}
    assert {"maps__filters__conv2", "maps__activations__conv3", "profiles__map__conv2"} <= named
    assert {"metrics.csv", "test_results.csv"} <= {path.name for path in run_dir.iterdir()}
    assert (run_dir / "profiles" / "layout_quality.csv").is_file()


def test_the_page_is_one_self_contained_file(trained_run, tmp_path):
    run_dir, _ = trained_run
    page = (run_dir / "report.html").read_text()
    assert "http://" not in page and "https://" not in page and "src='figures/" not in page
    for section in ("Test results", "Metric curves", "maps/filters/conv2", "profiles/map/conv3", "profiles/layout_quality.csv", "config.yaml"):
        assert section in page, section
    copy = tmp_path / "elsewhere.html"
    result = run_module("tmaps.commands.report", str(run_dir), f"output={copy}", cwd=tmp_path)
    assert result.stdout.strip() == f"report: {copy}"
    assert copy.read_text() == page


def test_a_folder_without_a_run_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match=rf"run folder {tmp_path} holds nothing to report"):
        write_report(tmp_path)
    with pytest.raises(FileNotFoundError, match="run folder .*missing does not exist"):
        write_report(tmp_path / "missing")
    (tmp_path / "metrics.csv").write_text("step,value\n1,2\n")
    with pytest.raises(ValueError, match=r"metrics.csv needs the columns step, metric, value"):
        write_report(tmp_path)


@pytest.fixture(scope="module")
def browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run does)")
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    session = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
    yield session
    session.quit()


def test_in_chromium_every_image_loads_the_slider_changes_the_frame_and_nothing_errs(trained_run, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    run_dir, _ = trained_run
    browser.get((run_dir / "report.html").as_uri())
    WebDriverWait(browser, 30).until(lambda page: page.execute_script("return document.readyState") == "complete")
    sizes = browser.execute_script("return Array.from(document.images).map(image => [image.alt, image.complete, image.naturalWidth])")
    assert len(sizes) > 5 and all(complete and width > 0 for _, complete, width in sizes), sizes
    section = browser.find_element(By.ID, "maps/filters/conv2")
    slider, image, caption = (section.find_element(By.CSS_SELECTOR, selector) for selector in (".slider", ".frame", ".caption"))
    assert slider.get_attribute("max") == "1"
    last_frame, last_caption = image.get_attribute("src"), caption.text
    slider.send_keys(Keys.HOME)
    WebDriverWait(browser, 10).until(lambda _: image.get_attribute("src") != last_frame)
    assert slider.get_attribute("value") == "0" and caption.text != last_caption and caption.text.endswith("(frame 1 of 2)")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) > 0
    section.find_element(By.CSS_SELECTOR, ".play").click()
    WebDriverWait(browser, 10).until(lambda _: image.get_attribute("src") == last_frame)
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors
