"""`crosspath serve`: an OpenAI-compatible HTTP server that answers with several reasoning paths.

    config.py     ServeConfig (server options) and Settings (what a request may override, limits)
    scheduler.py  fair FIFO batching of concurrent requests into one LeaP batch, drain and cancel
    service.py    requests -> prompts -> leap.solve / independent.solve -> majority vote -> reply
    protocol.py   the OpenAI wire format: request schemas, replies, stream chunks, error bodies
    app.py        FastAPI routes, API key, body limit, streaming; uvicorn with graceful shutdown
    cli.py        the `serve` subcommand

It builds on `crosspath.infer` (the methods' loops) the way `crosspath run` does. See docs/serve.md.
"""
