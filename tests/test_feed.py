"""The status-change feed's pure parts: event extras, change windows, suppression entries, and
the suppression list on SQLite. The feed through real Airflow is proven by the deployment tests
(``tests/deployment``) and by the example DAGs' end-to-end tests."""

from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from airflow_provider_phonestatus import feed

UTC = dt.UTC
T0 = dt.datetime(2026, 3, 1, 18, 0, tzinfo=UTC)


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def run(ended: float, **counts: Any) -> dict[str, Any]:
    """A run log row as ``RunLog`` returns it (aware times, parsed transitions)."""
    return {
        "table_name": "crm.customers",
        "run_uid": f"uid-{ended}",
        "started_at": at(ended - 10),
        "ended_at": at(ended),
        "status_changes": 0,
        "recycled_suspects": 0,
        "rows_written": 5,
        "paid_lookups": 4,
        "due_rows": 99,
        "changes_by_transition": {},
        **counts,
    }


def event(stamp: float, run_ended: float | None = None) -> SimpleNamespace:
    """An asset event as Airflow's task context gives it (attributes ``timestamp``, ``extra``)."""
    extra = {} if run_ended is None else feed.event_extra(run(run_ended))
    return SimpleNamespace(timestamp=at(stamp), extra=extra)


def test_event_extra_carries_the_run_and_its_counts_as_json() -> None:
    transitions = {"not_in_service->active": 1, "active->not_in_service": 2}
    extra = feed.event_extra(
        run(30, status_changes=3, recycled_suspects=1, changes_by_transition=transitions)
    )
    assert extra == {
        "table": "crm.customers",
        "run_uid": "uid-30",
        "run_started_at": "2026-03-01T18:20:00+00:00",
        "run_ended_at": "2026-03-01T18:30:00+00:00",
        "status_changes": 3,
        "recycled_suspects": 1,
        "rows_written": 5,
        "paid_lookups": 4,
        "changes_by_transition": {"active->not_in_service": 2, "not_in_service->active": 1},
    }
    assert json.loads(json.dumps(extra)) == extra
    # naive times are UTC, as the warehouse keeps them; missing counters are 0
    naive = {"table_name": "t", "started_at": dt.datetime(2026, 1, 1), "ended_at": "2026-01-01 00:05:00"}
    assert feed.event_extra(naive)["run_ended_at"] == "2026-01-01T00:05:00+00:00"
    assert feed.event_extra(naive)["status_changes"] == 0


def test_the_window_runs_from_the_previous_events_run_to_the_end_of_this_ones() -> None:
    earlier = [event(11, run_ended=10), event(41, run_ended=40)]
    triggering = [event(71, run_ended=70)]
    since, until = feed.changes_window(triggering, [*earlier, *triggering])
    assert (since, until) == (at(40).replace(tzinfo=None), at(70).replace(tzinfo=None))
    # The first run reads from the beginning; several events: up to the latest run's end.
    assert feed.changes_window(earlier, earlier) == (None, at(40).replace(tzinfo=None))
    # Events after this run's (the next run's) are ignored; an event without the feed's extra
    # counts by its own time.
    later = [event(100, run_ended=99)]
    assert feed.changes_window(triggering, [event(50), *triggering, *later])[0] == at(50).replace(tzinfo=None)


def test_a_run_that_ended_before_an_earlier_event_reads_nothing_twice() -> None:
    """Two refreshes whose events arrive out of the order their runs ended: the second window is
    empty, since the first already read up to the later end."""
    first = [event(50, run_ended=45)]  # e.g. the on-new-rows refresh, ended after the nightly one
    second = [event(52, run_ended=30)]  # the nightly check's event, for a refresh that ended at 30
    since, until = feed.changes_window(second, [*first, *second])
    assert since is not None and until < since


def test_events_from_the_rest_api_are_mappings_with_text_times() -> None:
    triggering = [{"timestamp": "2026-03-01T19:11:00Z", "extra": feed.event_extra(run(70))}]
    earlier = [{"timestamp": "2026-03-01T18:41:00+00:00", "extra": None}]
    assert feed.changes_window(triggering, earlier) == (
        dt.datetime(2026, 3, 1, 18, 41),
        dt.datetime(2026, 3, 1, 19, 10),
    )


def test_no_triggering_event_is_a_usage_error() -> None:
    with pytest.raises(ValueError, match="asset-scheduled"):
        feed.changes_window([], [event(1)])


def test_attach_puts_the_extra_on_the_asset_outlets_only() -> None:
    from airflow.sdk import Asset

    asset = Asset("phonestatus://crm/customers")
    asked: list[Any] = []
    accessor = SimpleNamespace(extra={"kept": 1})

    class Events:  # context["outlet_events"]: an accessor per asset (Asset is unhashable on 3.1)
        def __getitem__(self, key: Any) -> SimpleNamespace:
            asked.append(key)
            return accessor

    context = {"task": SimpleNamespace(outlets=[asset, "not an asset"]), "outlet_events": Events()}
    extra = feed.attach(context, run(30, status_changes=2))
    assert asked == [asset]
    assert accessor.extra == {"kept": 1, **extra} and extra["status_changes"] == 2


CHANGED = [
    {"id": 1, "status": "active", "previous_status": "not_in_service", "recycled_suspect": True},
    {"id": 2, "status": "not_in_service", "previous_status": "active", "recycled_suspect": False},
    {"id": 3, "status": "unavailable", "previous_status": "suspended", "recycled_suspect": False},
    {"id": 4, "status": "suspended", "previous_status": "not_in_service", "recycled_suspect": True},
    {"id": 5, "status": "pending_cancellation", "previous_status": "unavailable", "recycled_suspect": None},
    {"id": 6, "status": "suspended", "previous_status": "active", "recycled_suspect": 0},
    {"id": 7, "status": "active", "previous_status": "powered_off", "recycled_suspect": False},
]


def test_dead_and_recycled_rows_are_suppressed_without_their_phone() -> None:
    rows = [{**r, "phone": "13800138000", "status_changed_at": at(r["id"])} for r in CHANGED]
    entries = feed.suppressions(rows, ["id"])
    assert [(json.loads(e["row_key"]), e["reason"]) for e in entries] == [
        ({"id": 1}, "recycled_suspect"),
        ({"id": 2}, "dead"),
        ({"id": 4}, "recycled_suspect"),
        ({"id": 5}, "dead"),
        ({"id": 6}, "dead"),
    ]
    assert "13800138000" not in json.dumps(entries, default=str)
    assert feed.count_by(entries, "reason") == {"dead": 3, "recycled_suspect": 2}
    # a composite key, in a stable spelling
    (entry,) = feed.suppressions([{**rows[1], "src": "crm"}], ["src", "id"])
    assert entry["row_key"] == '{"id": 2, "src": "crm"}'


def test_changed_rows_and_the_suppression_list_on_sqlite(tmp_path: Any) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    table = sa.Table(
        "customers",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("phone", sa.String(64)),
        sa.Column("phone_status", sa.String(32)),
        sa.Column("phone_previous_status", sa.String(32)),
        sa.Column("phone_status_changed_at", sa.DateTime),
        sa.Column("phone_recycled_suspect", sa.Boolean),
    )
    naive = [at(r["id"]).replace(tzinfo=None) for r in CHANGED]
    rows = [
        {
            "id": r["id"],
            "phone": f"1380013800{r['id']}",
            "phone_status": r["status"],
            "phone_previous_status": r["previous_status"],
            "phone_status_changed_at": changed_at,
            "phone_recycled_suspect": bool(r["recycled_suspect"]),
        }
        for r, changed_at in zip(CHANGED, naive, strict=True)
    ]
    never_changed = dict.fromkeys(rows[0], None) | {"id": 8, "phone": "13800138018", "phone_status": "active"}
    rows.append(never_changed)
    with engine.begin() as conn:
        table.create(conn)
        conn.execute(table.insert(), rows)

    with engine.connect() as conn:
        window = {"since": naive[1], "until": naive[5]}  # (2, 6]
        changed = feed.changed_rows(conn, "customers", key_columns=["id"], phone_column="phone", **window)
        assert [r["id"] for r in changed] == [3, 4, 5, 6]
        assert changed[1] == {
            "id": 4,
            "phone": "13800138004",
            "status": "suspended",
            "previous_status": "not_in_service",
            "status_changed_at": naive[3],
            "recycled_suspect": True,
        }
        everything = feed.changed_rows(
            conn, "customers", key_columns=["id"], phone_column="phone", since=None, until=naive[-1]
        )
        assert [r["id"] for r in everything] == [1, 2, 3, 4, 5, 6, 7]

        suppression_list = feed.SuppressionList.ensure(conn, "suppressions")
        entries = feed.suppressions(changed, ["id"])
        who = {"table_name": "customers", "dag_id": "d", "run_id": "r1"}
        assert suppression_list.replace(conn, entries, **who) == 3
        assert suppression_list.replace(conn, entries, **who) == 3  # a cleared run: replaced, not doubled
        assert suppression_list.replace(conn, [], **{**who, "run_id": "r2"}) == 0
        conn.commit()
        listed = conn.execute(sa.select(suppression_list.table)).mappings().all()
    assert sorted((r["row_key"], r["reason"], r["run_id"]) for r in listed) == [
        ('{"id": 4}', "recycled_suspect", "r1"),
        ('{"id": 5}', "dead", "r1"),
        ('{"id": 6}', "dead", "r1"),
    ]
    assert {r["status_changed_at"] for r in listed} == {naive[3], naive[4], naive[5]}
    # A second ``ensure`` accepts the table it created.
    with engine.connect() as conn:
        feed.SuppressionList.ensure(conn, "suppressions")
    engine.dispose()
