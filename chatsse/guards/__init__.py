"""Guardrails: what the gateway itself checks in prompts and replies, on every face, without buffering a stream.

config.py      the [[guard]] tables, and who gets which guards (`guards = [...]`)
detectors.py   what the pii and blocklist guards find: typed placeholders, Luhn and IBAN checks (pure)
input.py       a request's text checked before any upstream call: redacted, flagged or refused
services.py    Azure AI Content Safety: Prompt Shields and text analysis, for the prompt_shield and content_safety kinds
stream.py      a reply's text checked through a window as it streams, released once checked (pure)
watch.py       Content Safety on a streaming reply: a window per sentence, checked while earlier windows stream
passthrough.py the output guards on a Responses upstream's own events: rewritten as released (pure)
"""
