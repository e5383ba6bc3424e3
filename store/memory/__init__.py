"""The in-memory twins of the stores: the embedded mode's stores, and the contract tests'
reference for the real ones."""
