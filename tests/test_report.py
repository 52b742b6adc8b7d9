"""``report.html`` of real tiny training runs, alone and side by side, opened in a real headless Chromium (Selenium)."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hydra import compose, initialize_config_module
from PIL import Image

from tmaps.commands.report import bare_runs_argv, write_report

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
CLAIMS = [
    {"id": "topography_costs_no_accuracy", "paper": "TDANN", "criterion": "CER within 0.02", "status": "met", "estimate": 0.004,
     "ci95": [-0.01, 0.018], "n_seeds": 3, "p": 0.41, "records": ["topo_s0", "topo_s1", "topo_s2"]},
]  # fmt: skip


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


def copied_run(source: Path, target: Path, seed: int, weight: float, shift: float) -> Path:
    """A copy of a real run folder as another seed or topographic weight would have left it: its config says so, its curves differ."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("report.html"))
    config_file = target / ".hydra" / "config.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["seed"], config["topo"]["weight"] = seed, weight
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    lines = (target / "metrics.csv").read_text().splitlines()
    shifted = [",".join([*row.split(",")[:3], repr(float(row.split(",")[3]) * (1 + shift))]) for row in lines[1:]]
    (target / "metrics.csv").write_text("\n".join([lines[0], *shifted]) + "\n")
    return target


@pytest.fixture(scope="module")
def study(trained_run, tmp_path_factory) -> Path:
    """A study folder: three seeds of the topographic run, one of its weight-0 baseline, and a claims file."""
    folder = tmp_path_factory.mktemp("study")
    for seed in range(3):
        copied_run(trained_run[0], folder / f"topo_s{seed}", seed, 1.0, 0.02 * seed)
    copied_run(trained_run[0], folder / "base_s1", 1, 0.0, 0.1)
    (folder / "claims.json").write_text(json.dumps({"claims": CLAIMS}))
    return folder


@pytest.fixture(scope="module")
def pages(study, tmp_path_factory) -> dict[str, Path]:
    """The comparison page of two runs (written by the command, from two bare run folders) and the study's page."""
    out = tmp_path_factory.mktemp("pages")
    result = run_module("tmaps.commands.report", str(study / "topo_s0"), str(study / "base_s1"), f"output={out / 'two.html'}", cwd=out)
    assert result.stdout.strip() == f"report: {out / 'two.html'}"
    return {"two": out / "two.html", "study": write_report(study)}


def page_images(page: Path) -> list[Image.Image]:
    payload = json.loads(re.search(r"<script type='application/json' id='report-data'>(.*?)</script>", page.read_text(), re.S).group(1))
    return [Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) for uri in payload["images"]]


def row_notes(page: Path) -> dict[str, str]:
    return dict(re.findall(r"<section class='map-row' id='([^']+)'><h3>.*?</h3>(?:<p class='note'>(.*?)</p>)?", page.read_text()))


def test_maps_of_several_runs_are_redrawn_on_one_colour_scale_that_the_page_states(pages):
    notes = row_notes(pages["two"])
    for key in ("profiles/map/conv2", "maps/activations/conv2", "maps/activations/conv3"):
        assert re.search(r"one colour scale for every map of this row on this page: ±[0-9.e-]+, the 99th percentile of \|values\|", notes[key]), key
    assert "IPA labels ordered by class" in notes["profiles/map/conv2"]
    assert "over every run" in notes["maps/activations/conv2"]
    assert "principal components, which do not compare across runs" in notes["maps/filters/conv3"]


def test_training_ends_with_the_report_and_names_its_maps_last(trained_run):
    run_dir, stdout = trained_run
    last_lines = stdout.strip().splitlines()[-8:]
    assert last_lines[-1] == f"  report      {run_dir / 'report.html'}"
    named = {Path(line.split()[-1]).parent.name for line in last_lines if line.strip().startswith("map ")}
    assert {"maps__filters__conv2", "maps__activations__conv3", "profiles__map__conv2"} <= named
    assert {"metrics.csv", "test_results.csv"} <= {path.name for path in run_dir.iterdir()}
    assert (run_dir / "profiles" / "layout_quality.csv").is_file()


def test_the_single_run_page_is_self_contained_and_leads_with_the_phoneme_maps(trained_run, tmp_path):
    run_dir, _ = trained_run
    page = (run_dir / "report.html").read_text()
    assert not re.search(r"(src|href)=['\"]?(https?:|figures/)", page)
    headings = re.findall(r"<h2>(.*?)</h2>", page)
    assert headings[:3] == ["Phoneme maps of the topographic layers", "Topography and diversity", "Test results"]
    for section in ("profiles/map/conv3", "maps/filters/conv2", "val/topo/conv3/participation_ratio", "profiles/layout_quality.csv", "config.yaml"):
        assert section in page, section
    copy = tmp_path / "elsewhere.html"
    result = run_module("tmaps.commands.report", str(run_dir), f"output={copy}", cwd=tmp_path)
    assert result.stdout.strip() == f"report: {copy}"
    assert f"run folder {os.path.relpath(run_dir, tmp_path)} (relative to this page)" in copy.read_text()
    assert "run folder . (relative to this page)" in page
    elsewhere = write_report(run_dir, tmp_path / "pages" / "elsewhere.html")
    assert f"run folder {os.path.relpath(run_dir, elsewhere.parent)} (relative to this page)" in elsewhere.read_text()
    assert all(image.format in ("WEBP", "PNG") for image in page_images(run_dir / "report.html"))


def test_leading_bare_run_folders_become_one_runs_list_for_hydra():
    argv = bare_runs_argv(["logs/a", "it's here", "x,y", "output=x.html"])
    with initialize_config_module(config_module="tmaps.conf", version_base="1.3"):
        cfg = compose(config_name="report", overrides=argv)
    assert list(cfg.runs) == ["logs/a", "it's here", "x,y"] and cfg.output == "x.html"
    assert bare_runs_argv(["runs=[a]"]) == ["runs=[a]"]


def test_study_page_groups_seeds_and_shows_the_claims(pages):
    page = pages["study"].read_text()
    assert pages["study"].parent.joinpath("claims.json").is_file() and "study folder . (relative to this page)" in page
    rows = re.findall(r"<tr class='(group|run)'><th class='run-name'>(.*?)</th>", page)
    assert rows == [("run", "base_s1"), ("group", "topo_s0 + topo_s1 + topo_s2 (3 seeds)")]
    assert re.findall(r"<th class='config-key'>(.*?)</th>", page) == ["topo.weight", "seed"]
    assert "topography_costs_no_accuracy" in page and "<td>met</td>" in page
    assert page.count("<span class='ci'>") >= 4 + 6  # the group's error rates and topography numbers carry a CI


def test_a_metrics_file_cut_mid_line_loses_that_line_with_a_warning_and_a_bad_line_is_named(trained_run, tmp_path, caplog):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run[0], run_dir)
    text = (run_dir / "metrics.csv").read_text()
    (run_dir / "metrics.csv").write_text(text[: text.rindex(",") - 3])
    with caplog.at_level(logging.WARNING, logger="tmaps.commands.report"):
        write_report(run_dir)
    assert re.search(rf"metrics file {re.escape(str(run_dir / 'metrics.csv'))}: its last line \(\d+\) is cut short", caplog.text)
    lines = text.splitlines()
    (run_dir / "metrics.csv").write_text("\n".join([lines[0], lines[1], "12,0,train/loss,oops", *lines[2:]]) + "\n")
    with pytest.raises(ValueError, match=r"metrics.csv line 3 cannot be read as step, metric, value: '12,0,train/loss,oops'"):
        write_report(run_dir)


def test_an_image_of_random_bytes_is_named_and_shown_as_a_placeholder(trained_run, tmp_path, caplog):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run[0], run_dir)
    broken = sorted((run_dir / "figures" / "maps__filters__conv2").glob("step*.png"))[0]
    broken.write_bytes(np.random.default_rng(0).bytes(3000))
    with caplog.at_level(logging.WARNING, logger="tmaps.commands.report"):
        page = write_report(run_dir)
    assert f"image {broken} cannot be read" in caplog.text and "placeholder" in caplog.text
    assert all(image.load() is not None for image in page_images(page))  # every embedded image decodes


def test_a_folder_without_a_run_is_refused_by_name(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"run folder .*empty holds nothing to report"):
        write_report(tmp_path / "empty")
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
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000", "--hide-scrollbars"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    session = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
    yield session
    session.quit()


def open_page(browser, page: Path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(page.as_uri())
    WebDriverWait(browser, 30).until(lambda driver: driver.execute_script("return document.documentElement.dataset.ready") == "true")


def severe_console_entries(browser) -> list[dict]:
    return [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


@pytest.mark.parametrize("page", ["two", "study"])
def test_in_chromium_every_image_of_a_comparison_renders_and_nothing_errs(pages, browser, page):
    open_page(browser, pages[page])
    images = browser.execute_script("return Array.from(document.images).map(image => [image.alt, image.complete, image.naturalWidth])")
    runs = 2 if page == "two" else 4
    assert len(images) >= 5 * runs and all(complete and width > 0 for _, complete, width in images), images
    assert browser.execute_script("return document.querySelectorAll('.chart polyline').length") > 0
    if page == "study":  # the seed group's curve has a band, the lone run's none
        assert browser.execute_script("return document.querySelector('.chart').querySelectorAll('polygon').length") == 1
    assert not severe_console_entries(browser)


def test_in_chromium_the_one_slider_moves_every_map_and_the_screenshot_shows_them(pages, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    open_page(browser, pages["two"])
    moving = browser.execute_script("return Array.from(document.querySelectorAll('img.map-frame')).filter(image => image.frames.length > 1)")
    assert len(moving) >= 2 * 4  # filter and activation maps of conv2 and conv3, in each of the two runs
    before = [image.get_attribute("src") for image in moving]
    slider = browser.find_element(By.ID, "epoch-slider")
    slider.send_keys(Keys.HOME)
    WebDriverWait(browser, 10).until(lambda _: all(image.get_attribute("src") != src for image, src in zip(moving, before)))
    assert browser.find_element(By.ID, "epoch-label").text.startswith("epoch 0")
    assert all(browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) > 0 for image in moving)

    row = browser.find_element(By.ID, "maps/filters/conv2")
    browser.execute_script("arguments[0].scrollIntoView(true); window.scrollBy(0, -60);", row)
    screenshot = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("L")
    ratio = browser.execute_script("return window.devicePixelRatio")
    for image in row.find_elements(By.CSS_SELECTOR, "img.map-frame"):
        box = browser.execute_script("var r = arguments[0].getBoundingClientRect(); return [r.left, r.top, r.right, Math.min(r.bottom, innerHeight)]", image)
        pixels = np.asarray(screenshot.crop(tuple(round(value * ratio) for value in box)), dtype=float)
        assert pixels.size > 1000 and pixels.std() > 10 and (pixels < 200).mean() > 0.01, box  # drawn, not blank
    assert not severe_console_entries(browser)


def test_in_chromium_the_config_table_lists_the_differing_keys_and_curves_show_values_on_hover(pages, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    open_page(browser, pages["two"])
    assert [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "table.runs th.config-key")] == ["topo.weight", "seed"]
    assert [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "table.runs th.run-name")] == ["topo_s0", "base_s1"]
    chart = browser.find_element(By.CSS_SELECTOR, ".chart[data-kind='topo']")
    browser.execute_script("arguments[0].scrollIntoView(true);", chart)
    ActionChains(browser).move_to_element(chart.find_element(By.CSS_SELECTOR, ".overlay")).perform()
    tip = chart.find_element(By.CSS_SELECTOR, ".tip")
    assert tip.is_displayed()
    shown = [float(value.text) for value in tip.find_elements(By.CSS_SELECTOR, ".value")]
    series = browser.execute_script("return JSON.parse(document.getElementById('report-data').textContent).charts.topo[0].series")
    assert len(shown) == 2 and all(any(abs(value - y) <= 1e-3 * abs(y) + 1e-9 for y in curve["y"]) for value, curve in zip(shown, series))
    legend = browser.find_element(By.CSS_SELECTOR, ".legend button[data-series='1']")
    legend.click()
    assert browser.execute_script("return arguments[0].querySelectorAll('polyline').length", chart) == 1
    legend.click()
    assert not severe_console_entries(browser)


def test_a_trained_run_keeps_every_test_utterance_so_its_page_gives_cer_with_a_ci(trained_run):
    run_dir = trained_run[0]
    utterances = pd.read_csv(run_dir / "test_utterances.csv")
    results = pd.read_csv(run_dir / "test_results.csv").set_index("split")
    for split, rows in utterances.groupby("split"):
        assert len(rows) == results.loc[split, "utterances"] and rows["id"].is_unique
        assert rows["char_edits"].sum() / rows["chars"].sum() == pytest.approx(results.loc[split, "cer"], abs=1e-6)
    page = write_report(run_dir, run_dir.parent / "with_ci.html").read_text()
    assert re.search(r"<th>test CER</th><td>[0-9.]+ <span class='ci'>\[[0-9.]+, [0-9.]+\]</span>", page)
