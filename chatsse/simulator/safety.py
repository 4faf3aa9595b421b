"""Azure AI Content Safety, simulated: `text:shieldPrompt` and `text:analyze` with deterministic triggers, for
`--demo`, the tests and the bench.

    shieldPrompt   an attack is detected in the user prompt, or a document, that says "ignore previous instructions"
    analyze        "sim-harm:<Category>=<severity>" in the text gives that category that severity (0 otherwise);
                   the categories are Hate, SelfHarm, Sexual and Violence
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from chatsse.simulator.http import Connection, RecordedRequest

CATEGORIES = ("Hate", "SelfHarm", "Sexual", "Violence")
ATTACK = re.compile(r"ignore (all )?previous instructions", re.IGNORECASE)
HARM = re.compile(r"sim-harm:(Hate|SelfHarm|Sexual|Violence)=([0-7])")
UNAUTHORIZED = {
    "error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint."}
}
BAD = {"error": {"code": "InvalidRequestBody", "message": "The request body is invalid."}}


def answer(
    conn: Connection, request: RecordedRequest, api_key: str | None, accepts_token: Callable[[str], bool] | None
) -> bool:
    """Answer a Content Safety call: with `accepts_token` (Entra ID), a Bearer token it accepts; else the key
    (Ocp-Apim-Subscription-Key)."""
    key, bearer = request.headers.get("ocp-apim-subscription-key"), request.headers.get("authorization", "")
    if accepts_token is not None:
        allowed = bearer.startswith("Bearer ") and accepts_token(bearer.removeprefix("Bearer "))
    else:
        allowed = key is not None and (api_key is None or key == api_key)
    if not allowed:
        return conn.write_json(401, UNAUTHORIZED)
    if request.method != "POST" or "api-version" not in request.query:
        return conn.write_json(404, {"error": {"code": "404", "message": "Resource not found"}})
    try:
        body: Any = request.json
    except ValueError:
        return conn.write_json(400, BAD)
    if request.path.endswith("/text:shieldPrompt"):
        prompt, documents = body.get("userPrompt", ""), body.get("documents") or []
        if not isinstance(prompt, str) or not isinstance(documents, list):
            return conn.write_json(400, BAD)
        return conn.write_json(
            200,
            {
                "userPromptAnalysis": {"attackDetected": bool(ATTACK.search(prompt))},
                "documentsAnalysis": [{"attackDetected": bool(ATTACK.search(str(d)))} for d in documents],
            },
        )
    if request.path.endswith("/text:analyze"):
        text = body.get("text")
        if not isinstance(text, str):
            return conn.write_json(400, BAD)
        severities = {category: 0 for category in body.get("categories") or CATEGORIES}
        for category, severity in HARM.findall(text):
            if category in severities:
                severities[category] = max(severities[category], int(severity))
        analysis = [{"category": c, "severity": s} for c, s in severities.items()]
        return conn.write_json(200, {"blocklistsMatch": [], "categoriesAnalysis": analysis})
    return conn.write_json(404, {"error": {"code": "404", "message": "Resource not found"}})
