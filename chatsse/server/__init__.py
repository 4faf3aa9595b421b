"""Serving HTTP: what every request passes through, before and around the faces.

protocol.py    the HTTP protocol `chatsse serve` runs: a deadline for headers, a cap on connections
observe.py     request ids, one log line per request
metrics.py     the Prometheus metrics: every series, and their exposition over workers
genai_metrics.py  the GenAI conventions' histograms, under their Prometheus names
cors.py        CORS for requests from browsers (an Origin); other POSTs pass straight through
access.py      caller keys, the per-caller rate limit, a bound on header size
body.py        reading a request body and query within their limits
departure.py   a client that leaves before its reply's first token: what waits on its behalf is cancelled
response.py    the streaming response: one task per stream, batches framed by the face
lifecycle.py   the cap on open streams, their count, and the drain on SIGTERM
memory.py      memory given back after a peak of streams (a collection and malloc_trim)
collector.py   the cyclic collector off the streams' path: older generations at lulls, or past a growth bound
health.py      the probes: /health, /health/live (the process answers), /health/ready (send it traffic)
reload.py      the configuration file reloaded live: SIGHUP, or its content changed; checked first
overload.py    shedding: lag, CPU and the accept queue read; new chats refused (503) while over, or at a ceiling
backlog.py     the kernel's accept queue of this process's listening sockets, read
hooks.py       the test-only hooks (CHATSSE_TEST_HOOKS): a loop blocked on purpose, the objects tracked
"""
