"""The gRPC layer: servicers that translate messages to engine calls and back, nothing else."""
