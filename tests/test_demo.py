"""The demo end to end (--quick, in a temporary folder), its bad-input errors, and its
report in a real browser (headless Chromium; skipped where none is installed)."""
import shutil
import subprocess
import sys

import numpy as np
import pytest

# every test runs the demo in a subprocess (about half a second each, more for the full demo)
pytestmark = pytest.mark.slow
DEMO = [sys.executable, "-m", "minilrp.demo"]


def run(*args, cwd=None):
    return subprocess.run(DEMO + list(args), capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    r = run("--quick", "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out, r.stdout


def test_demo_writes_every_promised_file(demo_out):
    out, stdout = demo_out
    for name in ("index.html", "heatmaps.png", "curves.png", "sanity.png"):
        assert (out / name).stat().st_size > 1000, name
    page = (out / "index.html").read_text()
    for heading in ("Settings", "Predictions", "Heatmaps", "Relevance ledger", "Region perturbation", "AOPC",
                    "Sanity checks"):
        assert f"<h2>{heading}" in page, heading
    # the AOPC table and the sanity checks are followed by sentences computed from their numbers
    assert page.count('<ul class="words">') == 2 and "relative to random)" in page and "Spearman |.|" in page
    assert page.count("data:image/png;base64,") >= 2
    # predictions, the ledger and AOPC are printed too
    assert "predicted" in stdout and "entering" in stdout and "AOPC" in stdout
    assert str(out / "index.html") in stdout


def test_list():
    r = run("--list")
    assert r.returncode == 0
    assert "fmnist-cnn" in r.stdout and "EpsilonGammaBox" in r.stdout and "uniform" in r.stdout


def test_user_image_file(tmp_path):
    from PIL import Image
    img = np.full((40, 30, 3), 255, np.uint8)
    img[10:30, 8:22] = 20  # a dark garment on a light background
    Image.fromarray(img).save(tmp_path / "shirt.png")
    r = run("--images", str(tmp_path / "shirt.png"), "--quick", "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    assert "resized to 28x28" in r.stdout and "inverted" in r.stdout


@pytest.mark.parametrize("args,message", [
    (["--model", "nope"], "unknown model 'nope'"),
    (["--model", "/nonexistent/x.npz"], "no such weight file"),
    (["--composite", "Bogus"], "unknown composite 'Bogus'"),
    (["--rule", "sharpen"], "unknown rule 'sharpen'"),
    (["--target", "10"], "out of range"),
    (["--target", "spaceship"], "not a class index or name"),
    (["--images", "0-2000"], "indices must lie in 0..999"),
    (["--images", "/nonexistent/picture.png"], "does not exist"),
    (["--perturbation", "smudge"], "unknown perturbation"),
    (["--sanity-images", "1"], "--sanity-images must be"),
])
def test_bad_input_one_line_error(args, message, tmp_path):
    r = run(*args, "--quick", "--out", str(tmp_path / "o"))
    assert r.returncode != 0
    assert message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args,message", [
    (["--steps", "500"], "--steps 500: a 28x28 image has 49 regions of 4x4, so at most 49 steps"),
    (["--n-eval", "5000"], "--n-eval 5000: there are 1000 bundled test images"),
    (["--perturbation", "smudge"], "unknown perturbation"),
])
def test_options_are_checked_before_any_work(args, message, tmp_path):
    """What the report would misstate, or what would fail late, fails first, in one line."""
    r = run(*args, "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert "Model" not in r.stdout and len(r.stderr.strip().splitlines()) == 1


def test_unreadable_image_and_unwritable_folder(tmp_path):
    bad = tmp_path / "not-an-image.png"
    bad.write_text("hello")
    r = run("--images", str(bad), "--quick", "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and "cannot read" in r.stderr and "Traceback" not in r.stderr
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = run("--quick", "--out", str(blocker / "sub"))
    assert r.returncode != 0 and "cannot write the output folder" in r.stderr and "Traceback" not in r.stderr


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="no Chromium/chromedriver installed")
def test_report_in_a_real_browser(demo_out, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    out, _ = demo_out
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2400"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        driver.get((out / "index.html").resolve().as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])")
        assert len(images) >= 2
        for alt, complete, w, h in images:
            assert complete and w > 0 and h > 0, f"image {alt!r} did not load"
        rows = driver.execute_script("return document.querySelectorAll('table.aopc tbody tr').length")
        assert rows >= 5
        assert driver.save_screenshot(str(tmp_path / "report.png"))
        assert (tmp_path / "report.png").stat().st_size > 10000
    finally:
        driver.quit()
