"""Developer-only helpers: tiny-model builders and local servers for tests and demos.

The runtime library never imports this package (a test checks it).
"""
