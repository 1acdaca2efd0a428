-- name = "churn"
-- title = "Churn"
-- title_ru = "Отток клиентов"
-- description_ru = "Клиент активен в день d, если платил в [d − 90 дней, d). Для каждого месяца, первый день которого лежит в [from, to), а следующий месяц начинается не позже as_of: активные — клиенты, активные в первый день месяца; ушедшие — те из них, кто не активен в первый день следующего месяца; отток = ушедшие / активные. Месяцы без активных клиентов строки не дают."
-- family = "retention"
-- description = """
-- A client is active on day d when they paid in [d - 90 days, d). For each month m whose first day lies
-- in [from, to) and whose next month starts no later than as_of: active = clients active on m's first
-- day, churned = those of them not active on the next month's first day, churn = churned / active.
-- Months with nobody active have no row."""
-- roles = ["owner", "team_lead", "manager", "analyst"]
-- chart = { kind = "line", x = "month", y = ["churn"] }
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
-- name = "month"
-- [[columns]]
-- name = "active"
-- unit = "clients"
-- [[columns]]
-- name = "churned"
-- unit = "clients"
-- [[columns]]
-- name = "churn"
-- unit = "ratio"
WITH months AS (
    -- Only months within 90 days after some payment can have anyone active: derive them from the
    -- payments (a month start lies 1 to 4 calendar months after the month of a payment).
    SELECT DISTINCT month_start, month_start + INTERVAL '1 month' AS next_start
    FROM (
        SELECT date_trunc('month', local(paid_at)) + INTERVAL '1 month' AS month_start FROM payments
        UNION ALL SELECT date_trunc('month', local(paid_at)) + INTERVAL '2 months' FROM payments
        UNION ALL SELECT date_trunc('month', local(paid_at)) + INTERVAL '3 months' FROM payments
        UNION ALL SELECT date_trunc('month', local(paid_at)) + INTERVAL '4 months' FROM payments
    )
    WHERE month_start >= $from AND month_start < $to AND month_start + INTERVAL '1 month' <= $as_of
),
active_start AS (
    SELECT DISTINCT mo.month_start, p.client_id
    FROM months mo JOIN payments p
      ON p.paid_at >= mo.month_start - INTERVAL '90 days' AND p.paid_at < mo.month_start
),
active_next AS (
    SELECT DISTINCT mo.month_start, p.client_id
    FROM months mo JOIN payments p
      ON p.paid_at >= mo.next_start - INTERVAL '90 days' AND p.paid_at < mo.next_start
)
SELECT CAST(a.month_start AS DATE) AS month,
       COUNT(*) AS active,
       SUM(CASE WHEN n.client_id IS NULL THEN 1 ELSE 0 END) AS churned,
       CAST(SUM(CASE WHEN n.client_id IS NULL THEN 1 ELSE 0 END) AS DOUBLE) / CAST(COUNT(*) AS DOUBLE) AS churn
FROM active_start a
LEFT JOIN active_next n ON n.month_start = a.month_start AND n.client_id = a.client_id
GROUP BY a.month_start
ORDER BY a.month_start
