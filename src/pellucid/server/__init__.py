"""The pellucid server: gRPC servicers over an engine over stores (see DESIGN.md)."""
