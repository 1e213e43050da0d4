"""A report as a reader sees it: headless Chromium (Debian's chromium + chromium-driver, driven by
selenium) at 1400 x 900 px. Skips with a reason where no Chromium is installed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

VIEWPORT = (1400, 900)

MEASURE = """
const images = [...document.images];
const verdict = [...document.querySelectorAll('h2')].find(h => h.textContent.trim() === 'Verdict');
let verdictBottom = null;
if (verdict) {  // the heading, its sentences and its table: everything up to the next heading
  let node = verdict, bottom = verdict.getBoundingClientRect().bottom;
  while ((node = node.nextElementSibling) && !/^H[1-6]$/.test(node.tagName)) {
    bottom = Math.max(bottom, node.getBoundingClientRect().bottom);
  }
  verdictBottom = bottom + window.scrollY;
}
const overflowing = [...document.querySelectorAll('td, th')]
  .filter(c => c.scrollWidth > c.clientWidth + 1).map(c => c.textContent.slice(0, 60));
const wideTables = [...document.querySelectorAll('table')]
  .filter(t => t.getBoundingClientRect().right > document.body.getBoundingClientRect().right + 1).length;
return {images: images.length, broken: images.filter(i => !i.complete || i.naturalWidth === 0).length,
        verdictBottom, overflowing, wideTables,
        pageOverflow: document.documentElement.scrollWidth > window.innerWidth};
"""


def chromium_measure(html: Path) -> dict:
    """What the page shows in Chromium: image counts, the verdict's bottom edge (px from the page top),
    table cells whose text overflows them, tables wider than the page."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not browser or not driver_path:
        pytest.skip("no Chromium here (Debian: apt-get install chromium chromium-driver; .ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {  # the page's viewport, exactly
            "width": VIEWPORT[0], "height": VIEWPORT[1], "deviceScaleFactor": 1, "mobile": False})
        driver.get(Path(html).resolve().as_uri())
        inner_height = driver.execute_script("return window.innerHeight")
        return {**driver.execute_script(MEASURE), "innerHeight": inner_height}
    finally:
        driver.quit()


def assert_readable(html: Path) -> dict:
    """Every image loads, the verdict is inside the first screen, no text overflows its table."""
    seen = chromium_measure(html)
    assert seen["images"] > 0 and seen["broken"] == 0, seen
    assert seen["verdictBottom"] is not None and seen["verdictBottom"] <= seen["innerHeight"], seen
    assert not seen["overflowing"] and not seen["wideTables"] and not seen["pageOverflow"], seen
    return seen
