"""A real Airflow 3 deployment on loopback, and the tests that drive it (``pytest -m deployment``)."""
