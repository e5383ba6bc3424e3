"""Generated protobuf modules (see schemas/generate.py)."""
