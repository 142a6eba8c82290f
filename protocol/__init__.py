"""The ZeroMQ wire contract (docs/protocol.md, v1): envelope, codec, server and clients."""
