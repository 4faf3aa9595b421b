"""The Responses API (`/v1/responses`): its requests, its events, and upstreams that speak it (pure, no I/O).

request.py     a /v1/responses body checked, kept as sent, and as a chat for upstreams speaking chat completions
stream.py      a reply as Responses events (synthesized, or the upstream's relayed unchanged), or one Response
translate.py   an upstream's Responses events as chatsse's typed events, for every face
convert.py     a chat as a Responses request body, for an upstream speaking Responses
"""

from chatsse.responses.request import ResponsesRequest, parse_responses
from chatsse.responses.stream import ResponseStream

__all__ = ["ResponseStream", "ResponsesRequest", "parse_responses"]
