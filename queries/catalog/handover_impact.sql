-- name = "handover_impact"
-- title = "Handover impact"
-- title_ru = "Передача клиентов"
-- description_ru = "По строке на каждую смену ответственного в [from, to): выигранная выручка клиента (по closed_at) за 90 дней до смены [смена − 90 д, смена) и после неё [смена, смена + 90 д), по новому ответственному. complete = false, если окно «после» заканчивается позже as_of."
-- family = "staff"
-- description = """
-- One row per ownership change in [from, to): the client's won revenue (by closed_at) in the 90 days
-- before the change [change - 90 d, change) and after it [change, change + 90 d), by new owner.
-- complete is false when the after-window ends after as_of."""
-- roles = ["owner", "team_lead", "manager", "analyst"]
-- chart = { kind = "table", x = "new_owner", y = ["revenue_before", "revenue_after"] }
--
-- [[params]]
-- name = "from"
-- type = "timestamp"
-- default = "month_start(to, -12)"
-- description = "start of the period, inclusive (default: first day of the month 12 months before `to`)"
-- description_ru = "начало периода, включительно (по умолчанию — первое число месяца за 12 месяцев до `to`)"
-- [[params]]
-- name = "to"
-- type = "timestamp"
-- default = "now"
-- description = "end of the period, exclusive (default: the snapshot time)"
-- description_ru = "конец периода, не включается (по умолчанию — время снимка)"
-- [[params]]
-- name = "as_of"
-- type = "timestamp"
-- default = "now"
-- description = "the instant the metric is computed as of (default: the snapshot time)"
-- description_ru = "момент, на который считается показатель (по умолчанию — время снимка)"
--
-- [[columns]]
-- name = "new_owner"
-- [[columns]]
-- name = "change_id"
-- [[columns]]
-- name = "client_id"
-- [[columns]]
-- name = "previous_owner"
-- [[columns]]
-- name = "changed_at"
-- [[columns]]
-- name = "revenue_before"
-- unit = "money"
-- [[columns]]
-- name = "revenue_after"
-- unit = "money"
-- [[columns]]
-- name = "complete"
WITH ch AS (
    SELECT change_id, client_id, from_staff, to_staff, changed_at
    FROM ownership_changes
    WHERE changed_at >= $from AND changed_at < $to
),
won AS (
    SELECT client_id, closed_at, amount FROM deals WHERE status = 'won' AND closed_at IS NOT NULL
)
SELECT COALESCE(CAST(ch.to_staff AS VARCHAR), 'unknown') AS new_owner,
       ch.change_id, ch.client_id,
       COALESCE(CAST(ch.from_staff AS VARCHAR), 'unknown') AS previous_owner,
       ch.changed_at,
       COALESCE(SUM(CASE WHEN w.closed_at >= ch.changed_at - INTERVAL '90 days' AND w.closed_at < ch.changed_at
                         THEN w.amount END), 0) AS revenue_before,
       COALESCE(SUM(CASE WHEN w.closed_at >= ch.changed_at AND w.closed_at < ch.changed_at + INTERVAL '90 days'
                         THEN w.amount END), 0) AS revenue_after,
       ch.changed_at + INTERVAL '90 days' <= $as_of AS complete
FROM ch
LEFT JOIN won w ON w.client_id = ch.client_id
GROUP BY ch.change_id, ch.client_id, ch.from_staff, ch.to_staff, ch.changed_at
ORDER BY new_owner, ch.changed_at, ch.change_id
