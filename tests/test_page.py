"""The chat page people expect, in real headless Chromium against a live gateway and the simulator: Markdown and
highlighted code rendered safely as they stream, the model picker, New chat, Regenerate, Retry, copy buttons, a
Thinking block, the keyboard, dark mode and a phone's width, accessibility (axe-core), the page's weight, and the
README's pictures."""

from __future__ import annotations

import gzip
import re
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chatsse.simulator import Simulator
from chatsse.upstreams import UpstreamConfig
from tests.conftest import GatewayFactory
from tests.servers import FLEET_KEY, Fleet, RunningServer, wait_until
from tests.test_browser import STATIC, Page

pytestmark = pytest.mark.browser

ROOT = Path(__file__).parent.parent
RICH = (
    "echo:Some **bold** text and a list:\n\n- one\n- two\n\n| name | size |\n|---|---|\n| a | 1 |\n\n"
    '```python\ndef greet(name):\n    return f"hi {name}"\n```\n'
)
PAYLOADS = (
    'echo:<img src=x onerror="window.pwned=1"> <script>window.pwned=2</script> '
    '[click](javascript:window.pwned=3) <a href="javascript:window.pwned=4">a</a> [docs](https://example.com)'
)
AXE = ROOT / "tests" / "node" / "node_modules" / "axe-core" / "axe.min.js"
PAGE_WEIGHT_LIMIT = 120 * 1024


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    opened = Page(browser, permissions=["clipboard-read", "clipboard-write"])
    yield opened
    opened.context.close()


def done(page: Page, index: int = -1) -> Any:
    reply = page.reply(index)
    reply.locator(".meta").wait_for()
    return reply


def test_markdown_and_code_render_as_they_stream(gateway: RunningServer, simulator: Simulator, page: Page) -> None:
    page.tab.goto(gateway.url + "/")
    page.send(RICH.replace("```python", "[sim: hold_after=30 hold=fence]```python"))
    reply = page.reply()
    reply.locator("pre code").wait_for()  # the fence is open, the reply held inside it: already code
    assert reply.locator("strong").inner_text() == "bold"
    simulator.release("fence")
    done(page)
    assert [li.inner_text() for li in reply.locator(".markdown ul li").all()] == ["one", "two"]
    assert reply.locator("table th").all_inner_texts() == ["name", "size"]
    code = reply.locator("pre code.language-python")
    assert code.locator("span.hljs-keyword").first.inner_text() == "def"  # highlighted
    assert 'return f"hi {name}"' in code.inner_text()
    assert page.errors == []


def test_nothing_the_model_writes_runs(gateway: RunningServer, page: Page) -> None:
    page.tab.goto(gateway.url + "/")
    page.send(PAYLOADS)
    reply = done(page)
    assert page.tab.locator("#log img, #log script, #log iframe").count() == 0
    assert reply.locator("a[href^='javascript']").count() == 0
    links = reply.locator("a")
    assert links.count() == 1 and links.get_attribute("href") == "https://example.com"
    assert links.get_attribute("rel") == "noopener noreferrer" and links.get_attribute("target") == "_blank"
    assert "[click](javascript:window.pwned=3)" in reply.inner_text()  # shown, inert
    for element in reply.locator(".markdown *").all():
        element.dispatch_event("click")
        element.dispatch_event("mouseover")
    assert page.tab.evaluate("window.pwned") is None
    assert page.errors == []


def test_it_renders_at_most_once_a_frame(gateway: RunningServer, page: Page) -> None:
    page.tab.goto(gateway.url + "/")
    page.tab.evaluate(
        """() => {
          window.frames_ = 0; window.paints = 0;
          const tick = () => { window.frames_ += 1; requestAnimationFrame(tick); };
          requestAnimationFrame(tick);
          new MutationObserver((records) => {
            if (records.some((r) => r.target.classList?.contains("markdown"))) window.paints += 1;
          }).observe(document.getElementById("log"), { childList: true, subtree: true });
        }"""
    )
    page.send("echo:" + " ".join(f"w{i}" for i in range(300)))  # 300 tokens with no delay: far faster than frames
    done(page)
    paints, frames = page.tab.evaluate("[window.paints, window.frames_]")
    assert 1 <= paints <= frames + 2, (paints, frames)
    assert paints < 300


def test_the_model_picker_sends_the_chosen_model(fleet: Fleet, browser: Any) -> None:
    simulator = fleet.sim("both", deployment=None)  # one server answering both deployments
    gateway = fleet.gateway(
        *(
            UpstreamConfig(name=name, model=name, endpoint=simulator.url, deployment=f"dep-{name}", api_key=FLEET_KEY)
            for name in ("small", "large")
        )
    )
    page = Page(browser)
    page.tab.goto(gateway.url + "/")
    picker = page.tab.get_by_label("Model")
    picker.wait_for()
    assert picker.locator("option").all_inner_texts() == ["small", "large"]
    picker.select_option("large")
    page.send("echo:to the large one")
    done(page)
    assert fleet.sims["both"].requests[-1].path == "/openai/deployments/dep-large/chat/completions"
    page.tab.reload()
    assert page.tab.get_by_label("Model").input_value() == "large"  # remembered in this tab
    page.context.close()


def test_a_single_model_shows_no_picker(gateway: RunningServer, page: Page) -> None:
    page.tab.goto(gateway.url + "/")
    page.send("echo:hi")
    done(page)
    assert page.tab.get_by_label("Model").is_hidden()


def test_copy_regenerate_and_new_chat(gateway: RunningServer, simulator: Simulator, page: Page) -> None:
    page.tab.goto(gateway.url + "/")
    page.send("echo:first")
    done(page)
    page.send(RICH)
    reply = done(page, 1)
    reply.get_by_role("button", name="Copy code").click()
    assert page.tab.evaluate("navigator.clipboard.readText()") == 'def greet(name):\n    return f"hi {name}"\n'
    reply.get_by_role("button", name="Copy reply").click()
    assert page.tab.evaluate("navigator.clipboard.readText()") == RICH.removeprefix("echo:")
    assert page.reply(0).get_by_role("button", name="Regenerate this reply").count() == 0  # only the last one
    asked = len(simulator.requests)
    reply.get_by_role("button", name="Regenerate this reply").click()
    done(page, 1)
    assert len(simulator.requests) == asked + 1
    assert simulator.requests[-1].json["messages"] == simulator.requests[-2].json["messages"]  # the same question
    assert page.tab.locator("#log > li.assistant").count() == 2
    page.tab.get_by_role("button", name="New chat").click()
    assert page.tab.locator("#log > li").count() == 0
    page.send("echo:fresh")
    done(page)
    assert simulator.requests[-1].json["messages"] == [{"role": "user", "content": "echo:fresh"}]
    assert page.errors == []


def test_errors_are_shown_inline_with_a_retry(gateway: RunningServer, simulator: Simulator, page: Page) -> None:
    page.tab.goto(gateway.url + "/")
    page.send("echo:second time lucky[sim: status=400 times=1]")
    alert = page.reply().get_by_role("alert")
    alert.wait_for()
    assert "content filter" in alert.inner_text()
    alert.get_by_role("button", name="Retry this reply").click()
    reply = done(page)
    assert reply.locator(".markdown").inner_text() == "second time lucky"
    assert page.tab.locator("#log > li.assistant").count() == 1  # the failed one made way
    page.send("echo:a b c[sim: cut_after=2]")
    page.reply().get_by_role("alert").get_by_role("button", name="Retry this reply").wait_for()
    assert len(simulator.requests) == 3


def test_thinking_is_a_collapsed_block(make_gateway: GatewayFactory, page: Page) -> None:
    gateway = make_gateway(reasoning=True)
    page.tab.goto(gateway.url + "/")
    page.send("echo:the answer[sim: reasoning=2]")
    reply = done(page)
    thinking = reply.locator("details.thinking")
    assert thinking.is_visible() and thinking.get_attribute("open") is None  # collapsed
    assert thinking.locator("summary").inner_text() == "Thinking"
    thinking.locator("summary").click()
    assert thinking.locator(".thought").inner_text() == "thought0 thought1"
    assert reply.locator(".markdown").inner_text() == "the answer"


@pytest.mark.parametrize("resume", [0, 30], ids=["resume off", "resume on"])
def test_esc_stops_and_focus_comes_back(
    make_gateway: GatewayFactory, simulator: Simulator, page: Page, resume: int
) -> None:
    gateway = make_gateway(resume_seconds=resume)
    page.tab.goto(gateway.url + "/")
    page.send(f"echo:never finishes[sim: hold_after=1 hold=esc{resume}]")
    assert page.tab.evaluate("document.activeElement.id") == "prompt"  # back in the box after sending
    page.reply().locator(".markdown").filter(has_text="never").wait_for()
    page.tab.keyboard.press("Escape")
    page.reply().get_by_text("Stopped.").wait_for()
    upstream = simulator.requests[-1]
    assert wait_until(lambda: upstream.peer_closed_at is not None, timeout=5)  # the upstream closed
    assert page.tab.evaluate("document.activeElement.id") == "prompt"
    simulator.release(f"esc{resume}")


LONG_CODE = "echo:```python\n" + "x = " + " + ".join(["1"] * 120) + "\n```\n\n| " + " | ".join(["col"] * 30) + " |\n"


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_a_phone_scrolls_code_not_the_page(gateway: RunningServer, browser: Any, scheme: str) -> None:
    phone = Page(browser, viewport={"width": 375, "height": 700}, color_scheme=scheme)
    phone.tab.goto(gateway.url + "/")
    phone.send(LONG_CODE + "|" + "---|" * 30 + "\n| " + " | ".join(["value"] * 30) + " |")
    done(phone)
    assert phone.tab.evaluate("document.documentElement.scrollWidth") <= 375  # no horizontal scroll
    assert phone.tab.evaluate(
        "(() => { const p = document.querySelector('#log pre'); return p.scrollWidth > p.clientWidth; })()"
    )
    assert phone.errors == []
    phone.context.close()


def test_readable_at_200_percent_zoom(gateway: RunningServer, browser: Any) -> None:
    # 200% zoom of a 1280 px window: the page sees 640 CSS pixels, with everything twice the size.
    zoomed = Page(browser, viewport={"width": 640, "height": 400}, device_scale_factor=2)
    zoomed.tab.goto(gateway.url + "/")
    zoomed.send(RICH)
    done(zoomed)
    assert zoomed.tab.evaluate("document.documentElement.scrollWidth") <= 640
    size = zoomed.tab.evaluate("parseFloat(getComputedStyle(document.querySelector('#log .markdown p')).fontSize)")
    assert size >= 16
    assert zoomed.tab.get_by_role("button", name="Send").is_visible()
    zoomed.context.close()


@pytest.mark.parametrize(
    ("scheme", "width"), [("light", 1280), ("dark", 1280), ("dark", 375)], ids=["light", "dark", "dark at 375 px"]
)
def test_no_serious_accessibility_violations(
    gateway: RunningServer, browser: Any, node_modules: Path, scheme: str, width: int
) -> None:
    # axe-core cannot be injected under the page's own policy: this context bypasses it, for axe only.
    checked = Page(browser, viewport={"width": width, "height": 900}, color_scheme=scheme, bypass_csp=True)
    checked.tab.goto(gateway.url + "/")
    checked.send(RICH)
    done(checked)
    checked.send("hi [sim: status=400]")  # an error on screen too
    checked.reply().get_by_role("alert").wait_for()
    checked.tab.add_script_tag(path=str(AXE))
    result = checked.tab.evaluate("axe.run(document, { resultTypes: ['violations'] })")
    serious = [
        f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert serious == []
    log = checked.tab.locator("#log")  # the conversation is announced politely
    assert log.get_attribute("aria-live") == "polite" and log.get_attribute("aria-label") == "Conversation"
    checked.context.close()


def page_weight() -> int:
    """The page's JavaScript and CSS, gzipped: what a browser downloads through a compressing proxy."""
    return sum(
        len(gzip.compress((STATIC / name).read_bytes(), 6))
        for name in ("app.js", "chatsse.js", "markdown.js", "style.css")
    )


def test_the_page_stays_light_and_the_readme_says_how_light() -> None:
    weight = page_weight()
    assert weight <= PAGE_WEIGHT_LIMIT
    stated = re.search(r"its JavaScript and CSS weigh (\d+) KB gzipped", (ROOT / "README.md").read_text())
    assert stated, "the README no longer states the page's weight"
    assert abs(int(stated.group(1)) - weight / 1024) <= 1, (
        f"README says {stated.group(1)} KB, it is {weight / 1024:.1f}"
    )


def test_the_readmes_pictures_come_from_the_script(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "docs" / "screenshot.py"), "--out", str(tmp_path)], check=True, timeout=120
    )
    for name, width in (("light", 900), ("dark", 900), ("phone", 375)):
        png = (tmp_path / f"screenshot-{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">I", png[16:20])[0] == width
        assert f"docs/screenshot-{name}.png" in (ROOT / "README.md").read_text()


def test_it_follows_the_reply_only_while_the_reader_is_at_the_bottom(
    gateway: RunningServer, simulator: Simulator, browser: Any
) -> None:
    small = Page(browser, viewport={"width": 700, "height": 500})
    small.tab.goto(gateway.url + "/")
    long = "echo:" + "\n\n".join(f"Paragraph {i} of a long reply." for i in range(40))
    at_bottom = "innerHeight + scrollY >= document.documentElement.scrollHeight - 48"
    small.send(long)
    done(small)
    assert small.tab.evaluate(at_bottom)  # it followed the reply down
    small.send(long.replace("echo:", "echo:[sim: hold_after=20 hold=scroll]"))
    small.reply().locator(".markdown").filter(has_text="Paragraph 1 ").wait_for()
    small.tab.evaluate("window.scrollTo(0, 0)")  # the reader goes back up to read
    simulator.release("scroll")
    done(small)
    assert small.tab.evaluate("scrollY") == 0  # and stays where they went
    small.context.close()
