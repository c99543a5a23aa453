"""Generated protobuf messages and gRPC stubs (see `pellucid.api.v1`)."""
