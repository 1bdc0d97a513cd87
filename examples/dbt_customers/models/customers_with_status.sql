-- Every customer with the last status the operator wrote for it. Run it after the operator: its
-- source exists only once the operator has run (it creates the status table when missing).
select
    c.id,
    c.name,
    c.phone,
    s.phone_status,
    s.phone_carrier,
    s.phone_ported,
    s.phone_checked_at,
    -- The status answers for the phone it was checked for; a phone changed since is not current
    -- until the next operator run rechecks it (the operator compares the same way).
    (s.id is not null and cast(c.phone as varchar) is not distinct from s.phone_checked_value)
        as phone_status_is_current
from {{ ref('customers') }} as c
left join {{ source('phonestatus', 'customer_phone_status') }} as s
    on s.id = c.id
