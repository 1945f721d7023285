"""Talking to ComfyUI servers: a websocket client, the HTTP API client, the graph built from a
request, the job that runs one request on one server, and the pool that spreads jobs over
several servers. Standard library and PIL only; no Qt."""
