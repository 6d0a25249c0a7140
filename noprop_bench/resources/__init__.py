"""Package data: the paper's tables, the accuracy thresholds and the built-in suites (read-only)."""
