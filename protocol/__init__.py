"""The ZeroMQ wire contract (PROTOCOL.md, v1): envelope, codec, server and clients."""
