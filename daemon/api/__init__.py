"""The positions API (seed 002): HTTP and WebSocket on one port, served by `actors.api`.

`views` shapes the daemon's state into JSON (pure), `tracker` decides which position updates to stream,
`http` routes and authenticates requests (pure), `taps` are the channels that feed the API without ever
blocking the books, and `server` is the WebSocket/HTTP edge with its per-client queues.
"""
