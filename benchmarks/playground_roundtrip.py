"""Round trip of the playground in a real browser: from a slider change to the new heatmap.

    python benchmarks/playground_roundtrip.py [--changes 40] [--models fmnist-cnn,...]

Starts the playground in this process (its own server thread, on a free port of 127.0.0.1),
opens it in headless Chromium (Debian's chromium + chromedriver, driven by Selenium), and for
every bundled model and a few methods presses the right-arrow key on a knob's slider, one
change at a time, waiting for each answer. The page itself measures each round trip with
performance.now(): from the slider's input event to the first animation frame after the new
heatmap (and every other picture of the answer) has been decoded, i.e. the frame that shows it.
It also reports the server's share (request in, JSON out), the computation inside it, and the
rest (browser, HTTP, JSON, PNG decoding, the wait for the frame) per change.

Then a burst: 20 key presses sent at once, to show that changes arriving while a request runs
coalesce (the page sends far fewer requests than it gets changes, and draws the last).

Prints medians with the 10th-90th percentile spread, and the load average before and after:
timings on a shared machine are contended, rerun it on a quiet one for figures to quote.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

from minilrp.models.data import available_models
from minilrp.playground.app import create_app
from minilrp.playground.browser import chromium, find_chromium, wait_for
from minilrp.playground.cli import serving

SCENARIOS = [("preset:EpsilonGammaBox", "gamma"), ("rule:AlphaBeta", "alpha"), ("sa:smoothgrad", "noise")]


def choose(driver, select_id, value):
    """Pick ``value`` in a select and wait for the answer to that change."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    if driver.find_element(By.ID, select_id).get_attribute("value") == value:
        return
    shown = driver.execute_script("return window.playground.shown")
    Select(driver.find_element(By.ID, select_id)).select_by_value(value)
    wait_for(driver, f"window.playground.shown > {shown} && window.playground.settled()", 180)


def press(driver, method, knob, changes, warmup):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    choose(driver, "method", method)
    slider = driver.find_element(By.CSS_SELECTOR, f"#params .knob[data-name={knob}] input[type=range]")
    times = []
    for k in range(warmup + changes):
        shown = driver.execute_script("return window.playground.shown")
        slider.send_keys(Keys.ARROW_RIGHT)
        wait_for(driver, f"window.playground.shown > {shown} && window.playground.settled()", 60)
        if k >= warmup:
            times.append(driver.execute_script("return window.playground.timings.at(-1)"))
    return times


def burst(driver, method, knob, n=20):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    choose(driver, "method", method)
    slider = driver.find_element(By.CSS_SELECTOR, f"#params .knob[data-name={knob}] input[type=range]")
    seq, shown = driver.execute_script("return [window.playground.seq, window.playground.shown]")
    value = driver.find_element(By.CSS_SELECTOR, f"#params .knob[data-name={knob}] input[type=number]")
    slider.send_keys(Keys.ARROW_RIGHT * n)
    wait_for(driver, f"window.playground.shown > {shown} && window.playground.settled()", 60)
    seq2, shown2, last = driver.execute_script(
        f"return [window.playground.seq, window.playground.shown, window.playground.lastRequest.params.{knob}]")
    assert last == float(value.get_attribute("value")), "the last drawn answer is not for the last change"
    return seq2 - seq, shown2 - shown


def spread(values):
    v = np.asarray(values, dtype=float)
    return f"{np.median(v):6.1f} [{np.percentile(v, 10):5.1f}, {np.percentile(v, 90):6.1f}]"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--changes", type=int, default=40, help="measured slider changes per model and method")
    p.add_argument("--warmup", type=int, default=5, help="unmeasured changes first (default 5)")
    p.add_argument("--models", default=",".join(available_models()))
    args = p.parse_args(argv)
    if not all(find_chromium()):
        sys.exit("needs Chromium and chromedriver (apt-get install chromium chromium-driver)")
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} cores")
    app = create_app()
    rows, bursts = [], []
    with tempfile.TemporaryDirectory() as profile, serving(app) as url:
        driver = chromium(profile)
        try:
            driver.get(url)
            wait_for(driver, "window.playground && window.playground.shown > 0 && window.playground.settled()", 180)
            for model in args.models.split(","):
                if driver.execute_script("return window.playground.lastRequest.model") != model:
                    choose(driver, "model", model)
                for method, knob in SCENARIOS:
                    t = press(driver, method, knob, args.changes, args.warmup)
                    ms = [r["ms"] for r in t]
                    server = [r["server_ms"] for r in t]
                    rows.append((model, method, knob, spread(ms), spread(server),
                                 spread([r["compute_ms"] for r in t]), spread(np.subtract(ms, server)),
                                 np.mean(np.asarray(ms) < 100)))
                    print(f"  {model} {method} ({knob}): round trip {rows[-1][3]} ms", flush=True)
                bursts.append((model, *burst(driver, "preset:EpsilonGammaBox", "gamma")))
        finally:
            driver.quit()
            app.extensions["playground"].close()
    print(f"load average after:  {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"\nRound trip slider change -> heatmap drawn, in headless Chromium, {args.changes} changes each "
          "(median [10th, 90th percentile], ms):\n")
    print("| model | method | knob | round trip | server | computing | outside the server | share < 100 ms |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for model, method, knob, rt, server, comp, outside, under in rows:
        print(f"| {model} | {method} | {knob} | {rt} | {server} | {comp} | {outside} | {100 * under:.0f}% |")
    print("\nBurst of 20 slider changes sent at once (coalescing):")
    for model, sent, drawn in bursts:
        print(f"  {model}: 20 changes -> {sent} requests sent -> {drawn} answers drawn (the last for the last change)")


if __name__ == "__main__":
    main()
