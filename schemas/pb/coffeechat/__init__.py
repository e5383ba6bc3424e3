"""Generated from schemas/proto/coffeechat/ (see schemas/generate.py)."""
