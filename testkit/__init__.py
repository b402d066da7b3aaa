"""Test kit: random-init models in the official formats and a local Realtime protocol server.

Not shipped with the package; the tests, the benches and demos import it from the repository root.
"""
