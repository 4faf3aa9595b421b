"""Take the README's pictures of the chat page, against `chatsse serve --demo` (no Azure needed): light, dark, and a
phone's width. Each shows the same two replies, Markdown and highlighted code included.

Run: python docs/screenshot.py [--out DIR]   (needs the dev extras and Debian's chromium, as the browser tests do)
Writes DIR/screenshot-light.png, screenshot-dark.png and screenshot-phone.png (DIR: docs/).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.servers import CHATSSE, clean_env, free_port, healthy, wait_until

SHOTS = {  # name: (viewport, color scheme)
    "light": ({"width": 900, "height": 760}, "light"),
    "dark": ({"width": 900, "height": 760}, "dark"),
    "phone": ({"width": 375, "height": 740}, "light"),
}
MESSAGES = ("What can you do?", "Show me some code")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent, help="where the PNG files go")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    demo = subprocess.Popen(
        [CHATSSE, "serve", "--demo", "--port", str(port)],
        env=clean_env(CHATSSE_LOG_FORMAT="json"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_until(lambda: healthy(url), timeout=30, interval=0.1):
            raise SystemExit("chatsse serve --demo did not start")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=os.environ.get("CHATSSE_CHROMIUM", CHROMIUM), args=CHROMIUM_ARGS
            )
            for name, (viewport, scheme) in SHOTS.items():
                context = browser.new_context(viewport=viewport, color_scheme=scheme, device_scale_factor=1)
                page = context.new_page()
                page.goto(url + "/")
                for index, message in enumerate(MESSAGES):
                    page.get_by_label("Message").fill(message)
                    page.get_by_label("Message").press("Enter")
                    page.locator("#log li.assistant").nth(index).locator(".meta").wait_for(timeout=30_000)
                page.get_by_label("Message").fill("And how do I stop a reply?")
                page.screenshot(path=str(out / f"screenshot-{name}.png"))
                context.close()
                print(f"wrote {out / f'screenshot-{name}.png'}")
            browser.close()
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(20)


if __name__ == "__main__":
    main()
