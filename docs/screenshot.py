"""Take docs/screenshot.png: the chat page mid-conversation, against the built-in simulator (no Azure needed).

Run: python docs/screenshot.py   (needs the dev extras and Debian's chromium, as the browser tests do)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatsse.app import create_app
from chatsse.settings import Settings
from chatsse.simulator import Simulator
from chatsse.upstreams import UpstreamConfig
from tests.servers import serve_in_thread
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

OUTPUT = Path(__file__).parent / "screenshot.png"
FIRST = "What are Server-Sent Events?"
SECOND = (
    "echo:Because each token is relayed the moment Azure sends it, the reply appears word by word — "
    "and if the connection breaks, you get an error event instead of a silently cut answer."
    "[sim: hold_after=14 hold=shot]"
)


def main() -> None:
    simulator = Simulator(delay=0.01)
    simulator.start_in_thread()
    upstream = UpstreamConfig(name="demo", endpoint=simulator.url, api_key="demo", deployment="demo")
    settings = Settings(upstreams=(upstream,), ping_seconds=0)
    with serve_in_thread(create_app(settings)) as gateway, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=os.environ.get("CHATSSE_CHROMIUM", CHROMIUM), args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 760, "height": 620}, device_scale_factor=1)
        page.goto(gateway.url + "/")
        for message in (FIRST, SECOND):
            page.get_by_label("Message").fill(message)
            page.get_by_label("Message").press("Enter")
            page.wait_for_timeout(600)
        page.get_by_label("Message").fill("And how do I stop a reply?")
        page.screenshot(path=str(OUTPUT))
        simulator.release("shot")
        browser.close()
    simulator.stop_thread()
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
