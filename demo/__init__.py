"""The demo's story and its messages (see docs/demo.md)."""
