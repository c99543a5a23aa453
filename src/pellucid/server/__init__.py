"""The pellucid server: gRPC servicers over an engine over stores (see docs/architecture.md)."""
