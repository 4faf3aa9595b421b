"""The Responses API (`/v1/responses`): its requests, its events, upstreams that speak it (pure but for stored.py).

request.py     a /v1/responses body checked, kept as sent, and as a chat for upstreams speaking chat completions
items.py       Responses input items as chat messages, for an upstream speaking chat completions
stream.py      a reply as Responses events (synthesized, or the upstream's relayed unchanged), or one Response
objects.py     what the API writes: events' framing, output items, the Response object, usage
translate.py   an upstream's Responses events as chatsse's typed events, for every face
convert.py     a chat as a Responses request body, for an upstream speaking Responses
stored.py      which upstream made each stored response, and for whom (in this process, or on Redis)
"""

from chatsse.responses.request import ResponsesRequest, parse_responses
from chatsse.responses.stream import ResponseStream

__all__ = ["ResponseStream", "ResponsesRequest", "parse_responses"]
