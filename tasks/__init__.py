"""Pipeline steps of the discovery flow: one module per step, pure functions plus a thin @task."""
