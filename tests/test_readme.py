"""The README's promises: its JavaScript client works against a live gateway, in Node, on streams split anywhere."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from tests.helpers import STREAM
from tests.servers import RunningServer
from tests.test_relay import TRICKY_TEXTS

README = (Path(__file__).parent.parent / "README.md").read_text()
RUNNER = """
const [url, body] = process.argv.slice(2);
try {
  for await (const event of chatStream(url, JSON.parse(body))) console.log(JSON.stringify(event));
} catch (error) {
  console.log(JSON.stringify({ thrown: error.message }));
}
"""


def run_readme_client(tmp_path: Path, url: str, body: object) -> list[dict[str, object]]:
    node = shutil.which("node")
    assert node, "node is needed to check the README's JavaScript (CI installs it)"
    client = re.search(r"```js\n(export async function\* chatStream.*?)```", README, re.S)
    assert client, "the README's chatStream example is gone"
    script = tmp_path / "client.mjs"
    script.write_text(client.group(1) + RUNNER)
    result = subprocess.run(
        [node, str(script), url, json.dumps(body)], capture_output=True, text=True, timeout=30, check=True
    )
    return [json.loads(line) for line in result.stdout.split("\n") if line]  # not splitlines(): U+2028 is data


def test_readme_javascript_client_reads_split_streams_exactly(gateway: RunningServer, tmp_path: Path) -> None:
    text = "".join(TRICKY_TEXTS.values())
    events = run_readme_client(tmp_path, gateway.url + STREAM, {"message": f"echo:{text}[sim: split=2]"})
    assert "".join(str(e["content"]) for e in events if "content" in e) == text
    assert events[-1]["done"] is True


def test_readme_javascript_client_reports_errors(gateway: RunningServer, tmp_path: Path) -> None:
    assert run_readme_client(tmp_path, gateway.url + STREAM, {"message": ""}) == [
        {"thrown": 'invalid_request: "message" must not be empty.'}
    ]
    events = run_readme_client(tmp_path, gateway.url + STREAM, {"message": "echo:a b[sim: cut_after=1]"})
    assert events[0] == {"content": "a"} and events[-1]["error"]["code"] == "upstream_disconnected"  # type: ignore[index]
