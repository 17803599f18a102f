"""Benchmarks (`lakd bench ...`): measurements written as JSON, never part of the test suite."""
