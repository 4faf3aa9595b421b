"""The protocols clients speak, each on the same relay: a face parses its request into a `ChatRequest`, lets
`ChatRelay.open` start the reply, and frames the typed events (`chatsse.events`) once, in its own format.

    native.py          chatsse's own events: /api/v1/chat/stream (POST, EventSource GET) and its resume route
    ui_stream.py       the AI SDK's UI message stream (useChat): /api/v1/chat/ui and its resume route
    ui_messages.py     useChat's UIMessages (text, images, tool calls and results) as the upstream's messages
    openai_compat.py   OpenAI's chat completions: /v1/chat/completions, /v1/models
    openai_chunks.py   a reply as OpenAI's chunks (every choice, tool call, refusal), or one chat.completion
    responses.py       OpenAI's Responses API: /v1/responses (streamed or not) and a stored response's own calls
    admin.py           the operators' face: the spend report, /api/v1/admin/usage (JSON or CSV)
"""
