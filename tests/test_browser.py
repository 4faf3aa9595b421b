"""The web page, chatsse.js and EventSource in real headless Chromium, against a live gateway and the simulator."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from starlette.applications import Starlette
from starlette.responses import FileResponse, HTMLResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from chatsse.app import create_app
from chatsse.settings import Settings
from chatsse.simulator import Simulator
from tests.conftest import GatewayFactory
from tests.cutting_proxy import cutting_proxy
from tests.helpers import STREAM
from tests.servers import RunningServer, serve_in_thread, wait_until

pytestmark = pytest.mark.browser

STATIC = Path(__file__).parent.parent / "chatsse" / "static"


class Page:
    """A browser tab that records console errors and uncaught exceptions."""

    def __init__(self, browser: Any, **context: Any) -> None:
        self.context = browser.new_context(**context)
        self.tab = self.context.new_page()
        self.tab.set_default_timeout(15_000)
        self.errors: list[str] = []
        self.tab.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.tab.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def send(self, text: str) -> None:
        self.tab.get_by_label("Message").fill(text)
        self.tab.get_by_label("Message").press("Enter")

    def reply(self, index: int = -1) -> Any:
        return self.tab.locator("#log li.assistant").nth(index)


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    opened = Page(browser)
    yield opened
    opened.context.close()


def test_page_loads_without_console_errors(gateway: RunningServer, page: Page) -> None:
    response = page.tab.goto(gateway.url + "/")
    assert response is not None and response.status == 200
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert page.tab.get_by_label("Message").is_visible()
    assert page.tab.get_by_role("button", name="Send").is_enabled()
    assert page.tab.get_by_role("button", name="Stop").is_disabled()
    assert page.errors == []


def test_reply_appears_token_by_token_then_in_full(gateway: RunningServer, simulator: Simulator, page: Page) -> None:
    page.tab.goto(gateway.url + "/")
    page.send("echo:alpha beta gamma delta[sim: hold_after=2 hold=page]")
    text = page.reply().locator(".text")
    text.filter(has_text="alpha beta").wait_for()
    assert text.text_content() == "alpha beta"  # partial, while the simulator holds the rest
    assert simulator.requests[-1].finished_at is None
    simulator.release("page")
    page.reply().locator(".meta").wait_for()
    assert text.text_content() == "alpha beta gamma delta"
    meta = page.reply().locator(".meta").text_content() or ""
    assert "finish: stop" in meta and "first token" in meta and "4 tokens" in meta
    assert page.errors == []


def test_stop_aborts_and_the_upstream_is_closed(gateway: RunningServer, simulator: Simulator, page: Page) -> None:
    page.tab.goto(gateway.url + "/")
    page.send("echo:never finishes[sim: hold_after=1 hold=stop-test]")
    page.reply().locator(".text").filter(has_text="never").wait_for()
    page.tab.get_by_role("button", name="Stop").click()
    page.reply().get_by_text("Stopped.").wait_for()
    assert page.reply().locator(".text").text_content() == "never"  # the reply so far is kept
    assert wait_until(lambda: simulator.requests[-1].peer_closed_at is not None)
    assert page.tab.get_by_role("button", name="Send").is_enabled()


def test_stop_with_resume_on_stops_the_reply_at_the_gateway(
    make_gateway: GatewayFactory, simulator: Simulator, page: Page
) -> None:
    gateway = make_gateway(resume_seconds=30)  # a disconnect alone would leave the reply read for 30 s
    page.tab.goto(gateway.url + "/")
    page.send("echo:never finishes[sim: hold_after=1 hold=stop-kept]")
    page.reply().locator(".text").filter(has_text="never").wait_for()
    page.tab.get_by_role("button", name="Stop").click()
    clicked = time.monotonic()
    page.reply().get_by_text("Stopped.").wait_for()
    upstream = simulator.requests[-1]
    assert wait_until(lambda: upstream.peer_closed_at is not None, timeout=5)
    assert upstream.peer_closed_at is not None and upstream.peer_closed_at - clicked < 1.0
    assert page.errors == []


def test_errors_are_shown_in_words_and_the_partial_reply_kept(gateway: RunningServer, page: Page) -> None:
    page.tab.goto(gateway.url + "/")
    page.send("hi [sim: status=400]")
    alert = page.reply(0).get_by_role("alert")
    alert.wait_for()
    assert "content filter" in (alert.text_content() or "")

    page.send("echo:one two three[sim: cut_after=2]")
    alert = page.reply(1).get_by_role("alert")
    alert.wait_for()
    assert "broke off" in (alert.text_content() or "")
    assert page.reply(1).locator(".text").text_content() == "one two"

    page.send("")  # an empty message is not sent
    assert page.tab.locator("#log li.user").count() == 2


def test_network_failure_is_shown(settings: Settings, browser: Any) -> None:
    opened = Page(browser)
    with serve_in_thread(create_app(settings)) as gateway:
        opened.tab.goto(gateway.url + "/")
    opened.send("anyone there?")  # the gateway is gone
    alert = opened.reply().get_by_role("alert")
    alert.wait_for()
    assert "Network error" in (alert.text_content() or "")
    opened.context.close()


def test_html_in_a_reply_is_shown_as_text_and_never_runs(gateway: RunningServer, page: Page) -> None:
    markup = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script><b>bold</b>'
    page.tab.goto(gateway.url + "/")
    page.send("echo:" + markup)
    page.reply().locator(".meta").wait_for()
    assert page.reply().locator(".text").text_content() == markup
    assert page.tab.locator("#log img, #log script, #log b").count() == 0
    assert page.tab.evaluate("window.pwned") is None


def test_conversation_history_is_sent(gateway: RunningServer, simulator: Simulator, page: Page) -> None:
    page.tab.goto(gateway.url + "/")
    page.send("echo:first")
    page.reply(0).locator(".meta").wait_for()
    page.send("echo:second")
    page.reply(1).locator(".meta").wait_for()
    assert simulator.requests[-1].json["messages"] == [
        {"role": "user", "content": "echo:first"},
        {"role": "assistant", "content": "first"},
        {"role": "user", "content": "echo:second"},
    ]


def test_keyboard_and_phone_width(gateway: RunningServer, browser: Any) -> None:
    phone = Page(browser, viewport={"width": 360, "height": 640})
    phone.tab.goto(gateway.url + "/")
    box = phone.tab.get_by_label("Message")
    box.type("line one")
    box.press("Shift+Enter")
    box.type("line two")
    assert box.input_value() == "line one\nline two"  # Shift+Enter is a newline, not a send
    assert phone.tab.locator("#log li").count() == 0
    phone.tab.keyboard.press("Tab")
    assert phone.tab.evaluate("document.activeElement.textContent") == "Send"
    phone.tab.keyboard.press("Enter")
    phone.reply().locator(".meta").wait_for()
    assert phone.tab.evaluate("document.documentElement.scrollWidth") <= 360
    phone.context.close()


def test_page_asks_for_a_caller_key_when_the_gateway_needs_one(make_gateway: GatewayFactory, page: Page) -> None:
    gateway = make_gateway(api_keys=("page-key-123",))
    page.tab.goto(gateway.url + "/")
    assert page.tab.get_by_label("Caller key", exact=False).is_hidden()
    page.send("echo:locked")
    page.reply().get_by_role("alert").wait_for()
    assert "caller key" in (page.reply().get_by_role("alert").text_content() or "").lower()
    page.tab.get_by_label("Caller key", exact=False).fill("page-key-123")
    page.tab.get_by_role("button", name="Use key").click()
    page.send("echo:unlocked")
    page.reply().locator(".meta").wait_for()
    assert page.reply().locator(".text").text_content() == "unlocked"
    assert page.errors == [] or all("401" in e for e in page.errors)


def test_web_ui_can_be_turned_off(make_gateway: GatewayFactory, page: Page) -> None:
    gateway = make_gateway(web_ui=False)
    response = page.tab.goto(gateway.url + "/")
    assert response is not None and response.status == 404
    script = page.tab.goto(gateway.url + "/static/chatsse.js")
    assert script is not None and script.status == 200


EVENTSOURCE = """async (url) => {
  const { openEventSource } = await import("/static/chatsse.js");
  return await new Promise((resolve) => {
    const events = [];
    const source = openEventSource(url, {
      onEvent: (event) => events.push(event),
      onClose: (last) => resolve({ events, last, state: source.readyState }),
    });
  });
}"""


def test_eventsource_gets_every_event_and_closes_on_done(
    gateway: RunningServer, simulator: Simulator, page: Page
) -> None:
    page.tab.goto(gateway.url + "/")
    url = STREAM + "?message=" + "echo%3Aover%20EventSource%20%F0%9F%98%80"
    result = page.tab.evaluate(EVENTSOURCE, url)
    assert "".join(e.get("content", "") for e in result["events"]) == "over EventSource 😀"
    assert result["last"]["done"] is True
    assert result["state"] == 2  # EventSource.CLOSED
    page.tab.wait_for_timeout(1500)
    assert len(simulator.requests) == 1  # no reconnect


CROSS_ORIGIN_PAGE = """<!doctype html><meta charset="utf-8"><title>another front end</title>
<script type="module">
const { chat } = await import(new URLSearchParams(location.search).get("module"));
window.runChat = async (url, message) => {
  try {
    let text = "";
    for await (const event of chat(url, { message }).events) {
      if (event.content) text += event.content;
      if (event.done) return { text };
    }
  } catch (error) {
    return { error: error.message };
  }
};
</script>"""


async def _front_end_page(request: Any) -> HTMLResponse:
    return HTMLResponse(CROSS_ORIGIN_PAGE)


OTHER_ORIGIN = Starlette(routes=[Route("/", _front_end_page), Mount("/static", StaticFiles(directory=STATIC))])


def run_chat_from(page: Page, front_end: RunningServer, module_url: str, gateway: RunningServer, text: str) -> Any:
    page.tab.goto(front_end.url + "/?module=" + module_url)
    page.tab.wait_for_function("typeof window.runChat === 'function'")
    return page.tab.evaluate("([u, m]) => window.runChat(u, m)", [gateway.url + STREAM, text])


def test_cross_origin_front_end_streams_when_its_origin_is_allowed(make_gateway: GatewayFactory, page: Page) -> None:
    with serve_in_thread(OTHER_ORIGIN) as front_end:
        gateway = make_gateway(cors_origins=("https://someone-else.example", front_end.url))
        # It imports chatsse.js from the gateway itself, as the README shows.
        result = run_chat_from(page, front_end, gateway.url + "/static/chatsse.js", gateway, "echo:hello from afar")
    assert result == {"text": "hello from afar"}


def test_cross_origin_front_end_is_refused_when_not_allowed(
    make_gateway: GatewayFactory, simulator: Simulator, page: Page
) -> None:
    gateway = make_gateway(cors_origins=("https://only-this.example",))
    with serve_in_thread(OTHER_ORIGIN) as front_end:
        result = run_chat_from(page, front_end, "/static/chatsse.js", gateway, "echo:let me in")
    assert "error" in result and "fetch" in result["error"].lower()
    assert simulator.requests == []  # the browser's preflight was refused, so the chat never started


LONG = " ".join(f"word{i}" for i in range(40))


def test_a_reload_mid_reply_finishes_the_reply_without_asking_again(
    make_gateway: GatewayFactory, simulator: Simulator, page: Page
) -> None:
    gateway = make_gateway(resume_seconds=30)
    page.tab.goto(gateway.url + "/")
    page.send(f"echo:{LONG}[sim: hold_after=5 hold=reload]")
    text = page.reply().locator(".text")
    assert wait_until(lambda: text.inner_text().startswith("word0 word1 word2 word3 word4"), timeout=10)
    page.tab.reload()
    assert page.tab.locator("#log li.user").first.inner_text().endswith(f"echo:{LONG}[sim: hold_after=5 hold=reload]")
    simulator.release("reload")
    reply = page.reply().locator(".text")
    assert wait_until(lambda: reply.inner_text() == LONG, timeout=15), reply.inner_text()
    page.reply().locator(".meta").wait_for()
    assert "finish: stop" in page.reply().locator(".meta").inner_text()
    assert page.tab.locator("#log li.assistant").count() == 1
    assert len(simulator.requests) == 1  # the reply was resumed, not asked for again
    assert page.errors == [] or all("ERR_" in error or "Failed to fetch" in error for error in page.errors)


def test_a_network_drop_mid_reply_resumes_when_it_comes_back(
    make_gateway: GatewayFactory, simulator: Simulator, page: Page
) -> None:
    gateway = make_gateway(resume_seconds=30)
    port = int(gateway.url.rsplit(":", 1)[1])
    with cutting_proxy(port) as proxy:  # the page reaches the gateway through a link the test can drop
        page.tab.goto(proxy.url + "/")
        page.send(f"echo:{LONG}[sim: hold_after=5 hold=offline]")
        text = page.reply().locator(".text")
        assert wait_until(lambda: text.inner_text().startswith("word0 word1 word2 word3 word4"), timeout=10)
        page.context.set_offline(True)
        proxy.cut()  # the connection drops: the browser is offline, so its first tries to resume fail
        simulator.release("offline")  # the reply goes on at the gateway meanwhile
        page.tab.wait_for_timeout(1500)
        assert not text.inner_text().endswith("word39")
        page.context.set_offline(False)
        assert wait_until(lambda: text.inner_text() == LONG, timeout=20), text.inner_text()
        page.reply().locator(".meta").wait_for()
        assert "finish: stop" in page.reply().locator(".meta").inner_text()
        assert proxy.connections >= 2  # it came back on a new connection
    assert len(simulator.requests) == 1


@pytest.fixture(scope="module")
def ai_bundle(tmp_path_factory: pytest.TempPathFactory, node_modules: Path) -> Path:
    """The `ai` package from tests/node, bundled for the browser (no CDN: everything from the local node_modules)."""
    node = node_modules.parent
    out = tmp_path_factory.mktemp("ai") / "ai.bundle.mjs"
    subprocess.run(
        [str(node / "node_modules" / ".bin" / "esbuild"), "browser-entry.mjs", "--bundle", "--format=esm",
         "--platform=browser", f"--outfile={out}", "--log-level=error"],
        cwd=node, check=True, timeout=120,
    )  # fmt: skip
    return out


def test_the_ai_sdk_chat_class_streams_a_reply_in_chromium(
    gateway: RunningServer, simulator: Simulator, page: Page, ai_bundle: Path
) -> None:
    node = Path(__file__).parent / "node"

    async def bundle(request: Any) -> Any:
        return FileResponse(ai_bundle, media_type="text/javascript")

    async def chat_page(request: Any) -> Any:
        return FileResponse(node / "chat-page.html")

    async def no_icon(request: Any) -> Any:
        return HTMLResponse("", status_code=204)

    site = Starlette(routes=[Route("/", chat_page), Route("/ai.bundle.mjs", bundle), Route("/favicon.ico", no_icon)])
    with serve_in_thread(site) as other_origin:
        text = "echo:Streamed to the SDK's Chat 😀 one two three[sim: hold_after=3 hold=sdk-chat]"
        query = urlencode({"api": gateway.url + "/api/v1/chat/ui", "text": text})
        page.tab.goto(f"{other_origin.url}/?{query}")
        reply = page.tab.locator("#reply")
        assert wait_until(lambda: reply.inner_text().startswith("Streamed to the"), timeout=10)  # streaming
        assert simulator.requests[-1].finished_at is None
        simulator.release("sdk-chat")
        page.tab.wait_for_function("document.body.dataset.status === 'ready'")
    assert reply.inner_text() == "Streamed to the SDK's Chat 😀 one two three"
    assert page.tab.evaluate("document.body.dataset.messages") == "2"
    assert page.errors == []
