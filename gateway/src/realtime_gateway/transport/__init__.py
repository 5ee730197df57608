"""The Socket.IO surface: server construction, payload models, handlers, acks."""
