"""The platform's tools: benchmarks, the device simulator and the harness they share with the
end-to-end tests. Run them from the repository root as ``python -m tools.<name>``."""
