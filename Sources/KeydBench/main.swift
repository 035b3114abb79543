// keyd-bench entry point.
