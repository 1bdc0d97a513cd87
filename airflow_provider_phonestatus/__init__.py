"""Apache Airflow provider that keeps phone-number status columns fresh."""

from __future__ import annotations

__version__ = "0.1.0"
