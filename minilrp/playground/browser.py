"""A headless Chromium driven by Selenium: for the playground's browser tests, its round-trip
benchmark and the README's screenshot. Needs Debian's ``chromium`` and ``chromium-driver``
(or a Chrome and chromedriver on PATH) and the ``selenium`` package (the ``test`` extra).
"""
from __future__ import annotations

import shutil
import time


def find_chromium():
    """(browser path, driver path), either None where not installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    return browser, shutil.which("chromedriver")


def chromium(profile_dir, width=1300, height=1500):
    """A Selenium driver for a fresh headless Chromium with its profile in ``profile_dir``.
    The flags keep it off the network (no proxy, no background or component updates): this
    machine's closed network refuses those connections, and a test must not depend on them."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    browser, driver = find_chromium()
    if not (browser and driver):
        raise RuntimeError("Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--no-proxy-server", f"--user-data-dir={profile_dir}",
                 f"--window-size={width},{height}"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=opts)


def wait_for(driver, script, timeout=30.0, poll=0.005):
    """Evaluate the JavaScript expression ``script`` until it is truthy; -> its value.
    Raises TimeoutError naming the expression and the page's last error."""
    end = time.perf_counter() + timeout
    while True:
        value = driver.execute_script(f"return {script}")
        if value:
            return value
        if time.perf_counter() > end:
            error = driver.execute_script("return window.playground && window.playground.error")
            raise TimeoutError(f"waited {timeout:g} s for {script!r} (page error: {error!r})")
        time.sleep(poll)
