"""The status columns the operator writes into the user's table, each renamable."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from airflow_provider_phonestatus.warehouse.owned import TIMESTAMP


@dataclass(frozen=True)
class StatusColumns:
    """Names of the columns written back; defaults as documented in the README."""

    status: str = "phone_status"  #: PhoneStatus value
    code: str = "phone_status_code"  #: raw vendor result code
    carrier: str = "phone_carrier"  #: Carrier value
    ported: str = "phone_ported"  #: boolean
    checked_at: str = "phone_checked_at"  #: naive UTC timestamp of the answer
    order_no: str = "phone_order_no"  #: vendor transaction id
    previous_status: str = "phone_previous_status"  #: the number's vendor status before this answer
    status_changed_at: str = "phone_status_changed_at"  #: current status first seen after another
    recycled_suspect: str = "phone_recycled_suspect"  #: cancelled before, live now (二次号)
    checked_value: str = "phone_checked_value"  #: the phone value (as text) that was checked

    def names(self) -> dict[str, str]:
        """Role -> column name."""
        return asdict(self)

    def types(self) -> dict[str, sa.types.TypeEngine[Any]]:
        """Role -> portable type used when the column has to be created (times with microseconds
        on MariaDB too, whose plain DATETIME keeps whole seconds: change windows compare them)."""
        return {
            "status": sa.String(32),
            "code": sa.String(16),
            "carrier": sa.String(32),
            "ported": sa.Boolean(),
            "checked_at": TIMESTAMP,
            "order_no": sa.String(64),
            "previous_status": sa.String(32),
            "status_changed_at": TIMESTAMP,
            "recycled_suspect": sa.Boolean(),
            "checked_value": sa.String(64),
        }

    @classmethod
    def with_names(cls, names: dict[str, str] | None) -> StatusColumns:
        """Defaults with some renamed: ``{"status": "mobile_status", ...}``."""
        return cls(**(names or {}))
