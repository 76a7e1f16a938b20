"""Loopback servers that speak the published contracts of outside services
(vendored in tests/contracts),
validating every request and response: the tests drive the real clients against them, and
the benchmarks load them."""
