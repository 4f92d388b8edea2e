"""Execution: batched model evaluation (and, later, executors that run tasks locally or on a cluster)."""
