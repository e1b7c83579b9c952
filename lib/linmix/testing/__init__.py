"""Helpers shared by linmix's tests, benchmarks and notebooks."""
