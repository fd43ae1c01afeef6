"""Benchmarks of SemanticDraw (see bench/README.md)."""
