"""The app in a real browser: Playwright driving Debian's chromium against ``python app.py --model test``.

Uploads a clip, types two expressions, runs, and checks what a visitor sees: the overlay video, the frame
view (and that the frame slider changes it), the presence timeline, the downloads, a shared link, and points
clicked on the frame view that re-track a target. Closing
the page ends the session, which removes its files.

The README's screenshot shows the toy model (``--model toy``) on its example clip, taken by a shorter walk
(also a test) on purpose only:

    python tests/test_browser.py --screenshot docs/screenshot.png
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import pytest
from PIL import Image
from test_app import CUPS, ROOT, RunFolders, running_app

TOY_CLIP = ROOT / "examples" / "toy_shapes.mp4"
TOY_EXPRESSIONS = "the yellow circle that goes behind the big shape\nthe green circle"

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 120_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/setup.sh --dev)"),
]


def _save_screenshot(png: bytes, path: Path) -> None:
    """A 256-colour PNG (a third of the size, no visible difference)."""
    with Image.open(io.BytesIO(png)) as shot:
        small = shot.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    path.parent.mkdir(parents=True, exist_ok=True)
    small.save(path, optimize=True)


def _wait(page, condition: str, what: str, log: Path) -> None:
    """Wait until the JavaScript ``condition`` holds; on a timeout, say what the page and the app showed."""
    try:
        page.wait_for_function(f"() => {condition}", timeout=TIMEOUT_MS)
    except Exception as error:
        state = page.evaluate(
            """() => ({
                estimate: document.querySelector('#estimate textarea')?.value,
                summary: document.querySelector('#summary textarea')?.value,
                frame: document.querySelector('#frame-view img')?.getAttribute('src'),
                toasts: [...document.querySelectorAll('[data-testid=toast-body]')].map(t => t.innerText),
            })"""
        )
        raise AssertionError(
            f"waited for {what}: {error}\npage: {state}\napp log:\n{log.read_text()[-3000:]}"
        ) from error


def _session_hash(page) -> str:
    return page.evaluate("() => window.__gradio_session_hash__")


def _click_on_view(page, row: int, x: float, y: float) -> None:
    """Click the frame view at (``x``, ``y``) of row ``row``, in the view image's own pixels (rows of 360)."""
    image = page.locator("#frame-view img")
    natural = image.evaluate("img => img.naturalWidth")
    box = image.bounding_box()
    ratio = box["width"] / natural
    image.click(position={"x": x * ratio, "y": (row * 360 + y) * ratio})


def _copy_link(page, url: str) -> str:
    """Press "Copy a link to this result" and read the link from the clipboard."""
    page.evaluate("() => navigator.clipboard.writeText('')")
    page.get_by_role("button", name="Copy a link to this result").click()
    link, deadline = "", time.monotonic() + 30
    while "deep_link=" not in link and time.monotonic() < deadline:
        time.sleep(0.2)
        link = page.evaluate("() => navigator.clipboard.readText()")
    assert link.startswith(url) and "deep_link=" in link
    return link


def _points(text: str, expression: str, frame: int, positive: bool) -> list[tuple[int, int]]:
    """The (x, y) of the points box's lines for ``expression`` on ``frame`` with that sign."""
    found = []
    for line in text.splitlines():
        name, number, place, *sign = line.rsplit(":", 3) if line.endswith(":neg") else line.rsplit(":", 2)
        if name == expression and int(number) == frame and (not sign) == positive:
            x, y = place.split(",")
            found.append((int(x), int(y)))
    return found


def _go_to_frame(page, frame: int, what: str, log: Path) -> None:
    """Move the frame slider to ``frame`` and wait until the frame view shows it."""
    slider = page.locator("#frame-slider input[type=number]")
    slider.fill(str(frame))
    slider.press("Enter")
    src = f"frame_{frame:05d}.jpg"
    _wait(page, f"document.querySelector('#frame-view img').getAttribute('src').endsWith('{src}')", what, log)


def _save_results_screenshot(page, screenshot: Path, log: Path) -> None:
    """Wait until the frame view, the timeline and the overlay video have loaded; save the whole page."""
    for image in ("#frame-view img", "#timeline img"):
        loaded = f"document.querySelector('{image}').complete"
        _wait(page, f"{loaded} && document.querySelector('{image}').naturalWidth > 0", image, log)
    _wait(page, "document.querySelector('#overlay-video video').readyState >= 1", "the video", log)
    page.evaluate("() => window.scrollTo(0, 0)")
    time.sleep(0.5)
    _save_screenshot(page.screenshot(full_page=True), screenshot)


def test_upload_type_run_and_see_every_result(tmp_path):
    screenshot = tmp_path / "screenshot.png"
    walk_through_the_page(tmp_path, screenshot)
    with Image.open(screenshot) as shot:
        assert shot.width == 1400 and shot.height > 1000


def test_the_toy_model_on_its_example(tmp_path):
    screenshot = tmp_path / "screenshot.png"
    show_the_toy_model(tmp_path, screenshot)
    with Image.open(screenshot) as shot:
        assert shot.width == 1400 and shot.height > 1000


def show_the_toy_model(folder: Path, screenshot: Path) -> None:
    """Run the app with the toy model, segment its example clip and save a screenshot of the page."""
    playwright = pytest.importorskip("playwright.sync_api")
    log = folder / "app" / "app.log"
    with (
        running_app(folder / "app", "--model", "toy") as url,
        playwright.sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url, wait_until="load")
            page.wait_for_selector("#run-button")
            assert "Toy model" in page.locator("#model-notice").inner_text()
            page.locator("#video-input input[type=file]").set_input_files(str(TOY_CLIP))
            page.locator("#expressions textarea").fill(TOY_EXPRESSIONS)
            page.locator("#run-button").click()
            page.wait_for_selector("#overlay-video video[src]")
            _wait(
                page,
                "document.querySelector('#summary textarea').value.includes('frames x 2')",
                "the summary",
                log,
            )
            summary = page.locator("#summary textarea").input_value()
            first, second = TOY_EXPRESSIONS.splitlines()
            assert f'[blue] "{first}"' in summary and f'[orange] "{second}"' in summary
            assert "UNTRAINED" not in summary and "No match" not in summary
            _go_to_frame(page, 8, "frame 8 in the frame view", log)
            _save_results_screenshot(page, screenshot, log)
        finally:
            browser.close()


def walk_through_the_page(folder: Path, screenshot: Path) -> None:
    """Run the app in ``folder``, use it as a visitor would (asserting what they see) and save a screenshot
    of the page with the results to ``screenshot``."""
    playwright = pytest.importorskip("playwright.sync_api")
    log = folder / "app" / "app.log"
    share_links = {"MPGSAM2_SHARE_LINKS": "1"}  # as on a Space
    with (
        running_app(folder / "app", "--model", "test", env=share_links) as url,
        playwright.sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            context = browser.new_context(
                viewport={"width": 1400, "height": 1000}, permissions=["clipboard-read", "clipboard-write"]
            )
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url, wait_until="load")
            page.wait_for_selector("#run-button")
            assert "UNTRAINED TEST MODEL" in page.locator("#model-notice").inner_text()

            page.locator("#video-input input[type=file]").set_input_files(str(CUPS))
            page.locator("#expressions textarea").fill("the yellow ball\nthe cup on the right")
            page.locator("#max-frames input").fill("12")
            page.locator("#max-frames input").press("Tab")
            estimate = page.locator("#estimate textarea")
            _wait(
                page,
                "document.querySelector('#estimate textarea').value.startsWith('12 frames x 2')",
                "the estimate",
                log,
            )
            assert (
                "12 frames x 2 expressions = 24 frame-expressions at 640x360; about" in estimate.input_value()
            )

            page.locator("#run-button").click()
            page.wait_for_selector("#overlay-video video[src]")
            _wait(
                page,
                "document.querySelector('#summary textarea').value.includes('12 frames x 2')",
                "the summary",
                log,
            )
            summary = page.locator("#summary textarea").input_value()
            assert '[blue] "the yellow ball"' in summary and '[orange] "the cup on the right"' in summary
            assert "UNTRAINED TEST MODEL" in summary

            # The frame view: frame 0 first, frame 5 after moving the slider.
            frame_view = page.locator("#frame-view img")
            assert frame_view.get_attribute("src").endswith("frame_00000.jpg")
            _go_to_frame(page, 5, "frame 5 in the frame view", log)

            downloads = page.locator("#downloads").inner_text()
            for name in ("mpgsam2_results", "overlay", "masks_palette", "masks_rle"):
                assert name in downloads

            # The images and the H.264 file load in the browser.
            _save_results_screenshot(page, screenshot, log)

            # A shared link opens the same result, frames included.
            link = _copy_link(page, url)
            shared = context.new_page()
            shared.set_default_timeout(TIMEOUT_MS)
            shared.goto(link, wait_until="load")
            _wait(
                shared,
                "document.querySelector('#summary textarea')?.value.includes('12 frames x 2')",
                "it",
                log,
            )
            assert shared.locator("#summary textarea").input_value() == summary
            assert shared.locator("#overlay-video video").get_attribute("src").endswith("overlay.mp4")
            assert shared.locator("#frame-view img").get_attribute("src").endswith("frame_00005.jpg")
            _go_to_frame(shared, 9, "frame 9 in the shared result", log)
            shared.close()

            # Correcting a target: clicks on the frame view (frame 5) become points, then re-track.
            _click_on_view(page, row=0, x=320, y=180)  # the yellow ball's row, the middle of the frame
            points = page.locator("#points textarea")
            _wait(page, "document.querySelector('#points textarea').value.includes(':5:')", "a point", log)
            ((x, y),) = _points(points.input_value(), "the yellow ball", 5, positive=True)
            assert abs(x - 320) <= 3 and abs(y - 180) <= 3
            # At once, the frame view shows the clicked frame corrected by the point (a preview).
            _wait(
                page,
                "!document.querySelector('#frame-view img').getAttribute('src').endsWith('frame_00005.jpg')",
                "the preview of the clicked frame",
                log,
            )
            page.locator("#negative-points input[type=checkbox]").check()
            _click_on_view(page, row=1, x=640 + 100, y=50)  # the cup's row, in its prior panel
            _wait(
                page, "document.querySelector('#points textarea').value.includes(':neg')", "a negative", log
            )
            ((x, y),) = _points(points.input_value(), "the cup on the right", 5, positive=False)
            assert abs(x - 100) <= 3 and abs(y - 50) <= 3
            page.locator("#undo-point").click()
            _wait(page, "!document.querySelector('#points textarea').value.includes(':neg')", "the undo", log)
            assert len(points.input_value().splitlines()) == 1
            page.locator("#retrack").click()
            _wait(
                page,
                "document.querySelector('#summary textarea').value.includes('Corrected with points')",
                "the re-tracked summary",
                log,
            )
            corrected = page.locator("#summary textarea").input_value()
            assert '"the yellow ball": frame 5 at' in corrected
            # The corrected result's link opens it with its points.
            corrected_link = _copy_link(page, url)
            assert corrected_link != link
            shared = context.new_page()
            shared.set_default_timeout(TIMEOUT_MS)
            shared.goto(corrected_link, wait_until="load")
            _wait(
                shared, "document.querySelector('#summary textarea')?.value.includes('Corrected')", "it", log
            )
            assert shared.locator("#summary textarea").input_value() == corrected
            assert shared.locator("#points textarea").input_value() == points.input_value()
            shared.close()

            # Closing the tab ends the session: its folder goes away.
            session = RunFolders(folder / "app" / "sessions").folder(_session_hash(page))
            assert session.is_dir()
            page.close()
            deadline = time.monotonic() + 30
            while session.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not session.exists()
        finally:
            browser.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Take the README's screenshot of the app with its results.")
    parser.add_argument("--screenshot", type=Path, default=ROOT / "docs" / "screenshot.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mpgsam2-screenshot-") as work:
        show_the_toy_model(Path(work), args.screenshot.resolve())
    print(f"saved {args.screenshot}")
