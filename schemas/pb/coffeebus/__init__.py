"""Generated from schemas/proto/coffeebus/ (see schemas/generate.py)."""
