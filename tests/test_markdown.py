"""The page's Markdown renderer (the committed bundle chatsse/static/markdown.js, run in Node on jsdom's DOM): random
mixes of Markdown and hostile HTML never produce an element or attribute outside the allow-list, nor a link that
is not http(s) or mailto. Its output is parsed here by the standard library's parser, not the DOM that made it."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

BUNDLE = Path(__file__).parent.parent / "chatsse" / "static" / "markdown.js"
TAGS = {
    "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "li", "ol", "p", "pre",
    "s", "span", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
}  # fmt: skip
ATTRIBUTES = {"class", "href", "rel", "start", "target", "title"}
SAFE_LINK = re.compile(r"^(https?:|mailto:)", re.IGNORECASE)
CLASS = re.compile(r"^(language-[\w+-]+|hljs-[\w-]+|[\w-]+_)$")  # highlight.js's own names (e.g. "function_")
HOSTILE = [
    "<script>window.pwned=1</script>",
    '<img src=x onerror="window.pwned=1">',
    "<svg onload=window.pwned=1>",
    '<iframe src="https://evil.example"></iframe>',
    "<style>body{display:none}</style>",
    '<a href="javascript:window.pwned=1">a</a>',
    '<details open ontoggle="window.pwned=1">',
    '<form action="https://evil.example"><input name=x></form>',
    "[x](javascript:window.pwned=1)",
    "[y](data:text/html;base64,PHNjcmlwdD4=)",
    "[z](vbscript:msgbox)",
    "[rel](/relative/path)",
    "![pixel](https://tracker.example/p.gif)",
    '<a href="https://ok.example" onclick="window.pwned=1">ok</a>',
    '<div style="position:fixed">x</div>',
    "javascript:window.pwned=1",
    "&#x3C;script&#x3E;",
    "<!-- comment --><math><mi xlink:href=javascript:x>",
]
MARKDOWN = [
    "**bold**", "_em_", "~~gone~~", "`code`", "# Title", "> quote", "- item", "1. first", "\n\n", "\n",
    "| a | b |\n|---|:-:|\n| 1 | 2 |\n", "```python\nprint('hi')\n", "```\n", "```js\nalert(1)\n```\n",
    "[docs](https://example.com 'title')", "<https://example.com>", "https://example.com", "mailto:a@b.example",
    "***", "    indented code\n",
]  # fmt: skip
PIECES = st.one_of(st.sampled_from(HOSTILE), st.sampled_from(MARKDOWN), st.text(max_size=20))


class Found(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in TAGS:
            self.problems.append(f"element {tag}")
        names = {name for name, _ in attrs}
        for name, value in attrs:
            if name not in ATTRIBUTES:
                self.problems.append(f"attribute {name} on {tag}")
            elif name == "href" and not SAFE_LINK.match(value or ""):
                self.problems.append(f"link {value!r}")
            elif name == "class" and not all(CLASS.match(c) for c in (value or "").split()):
                self.problems.append(f"class {value!r}")
        if tag == "a" and "href" in names and dict(attrs).get("rel") != "noopener noreferrer":
            self.problems.append("a link without rel=noopener noreferrer")


class Renderer:
    """One Node process rendering with the bundle, a JSON line in and out."""

    def __init__(self, node: Path) -> None:
        self.process = subprocess.Popen(
            ["node", "render.mjs", str(BUNDLE)],
            cwd=node,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def __call__(self, markdown: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(markdown) + "\n")
        self.process.stdin.flush()
        html: str = json.loads(self.process.stdout.readline())["html"]
        return html

    def close(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        self.process.wait(10)
        self.process.stdout.close()


@pytest.fixture(scope="module")
def render(node_modules: Path) -> Iterator[Renderer]:
    renderer = Renderer(node_modules.parent)
    yield renderer
    renderer.close()


def problems(html: str) -> list[str]:
    found = Found()
    found.feed(html)
    found.close()
    return found.problems


def test_markdown_renders_and_code_is_highlighted(render: Renderer) -> None:
    html = render(
        "**bold** and `code`\n\n- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```python\ndef f(): pass\n```"
    )
    assert "<strong>bold</strong>" in html and "<code>code</code>" in html and "<li>one</li>" in html
    assert "<table>" in html and "<th>a</th>" in html
    assert '<code class="language-python"><span class="hljs-keyword">def</span>' in html
    assert problems(html) == []


def test_an_unfinished_code_fence_is_already_code(render: Renderer) -> None:
    html = render("Look:\n\n```python\nfor i in range(3):\n    print(i")  # the reply so far, mid-stream
    assert '<pre><code class="language-python">' in html and "range" in html


def test_raw_html_is_shown_as_text_and_unsafe_links_are_not_links(render: Renderer) -> None:
    html = render('<b>x</b> <img src=x onerror="a()"> [x](javascript:alert(1)) [ok](https://ok.example)')
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<img" not in html
    assert "javascript" not in re.sub(r">[^<]*<", "><", html)  # only as text, never in an attribute
    assert '<a href="https://ok.example" rel="noopener noreferrer" target="_blank">ok</a>' in html


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(PIECES, max_size=12))
def test_no_mix_of_markdown_and_html_escapes_the_allow_list(render: Renderer, pieces: list[str]) -> None:
    html = render("".join(pieces))
    assert problems(html) == [], html
