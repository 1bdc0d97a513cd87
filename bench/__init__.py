"""Benchmarks of airflow-provider-phonestatus: ``python -m bench [--only NAME ...] [--quick]``."""
