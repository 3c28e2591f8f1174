"""The README's picture of the playground, taken in headless Chromium.

    python tools/playground_screenshot.py [-o docs/playground.png]

Serves the playground on a free port of 127.0.0.1, opens it at 1280 x 1000, picks a test
image and the Gamma rule with z^B at the pixels, and saves the page as a 256-colour PNG (small
enough to commit). Needs Chromium, chromedriver and the ``test`` extra (Selenium).
"""
from __future__ import annotations

import argparse
import tempfile

from minilrp.playground.app import create_app
from minilrp.playground.browser import chromium, wait_for
from minilrp.playground.cli import serving


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--out", default="docs/playground.png")
    p.add_argument("--sample", type=int, default=0, help="bundled test image (default 0, an ankle boot)")
    args = p.parse_args(argv)
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    app = create_app()
    with tempfile.TemporaryDirectory() as profile, serving(app) as url:
        d = chromium(profile, 1280, 1000)
        try:
            d.get(url)
            wait_for(d, "window.playground && window.playground.shown > 0 && window.playground.settled()", 180)

            def change(action):
                shown = d.execute_script("return window.playground.shown")
                action()
                wait_for(d, f"window.playground.shown > {shown} && window.playground.settled()", 60)
            sample = d.find_element(By.ID, "sample")
            sample.clear()
            sample.send_keys(str(args.sample))
            change(lambda: d.find_element(By.ID, "load-sample").click())
            change(lambda: Select(d.find_element(By.ID, "method")).select_by_value("rule:Gamma"))
            change(lambda: Select(d.find_element(By.ID, "pixel_rule")).select_by_value("zbox"))
            field = d.find_element(By.CSS_SELECTOR, "#params .knob[data-name=gamma] input[type=number]")
            field.clear()
            change(lambda: field.send_keys("0.5"))
            d.execute_script("document.activeElement.blur()")
            png = d.get_screenshot_as_png()
        finally:
            d.quit()
            app.extensions["playground"].close()
    import io
    # 256 colours by octree: a quarter of the RGB file, and the colour bar stays smooth
    # (median cut, Pillow's default, merges its few blues into bands)
    Image.open(io.BytesIO(png)).convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE).save(
        args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
