-- The customer table dbt rebuilds at every run (drop and create): columns the operator added to it
-- would vanish, which is why the statuses live in the operator's status_table instead.
select
    cast(id as integer) as id,
    name,
    cast(phone as varchar(64)) as phone
from {{ ref('raw_customers') }}
