"""Generated gRPC/protobuf code for scanner.v1 (proto/generate.py)."""
