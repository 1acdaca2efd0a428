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
WITH paid AS (
    -- Each client's last payment in each local month. Whether a client is active on the first day m
    -- of a month depends on nothing else: a payment of month p is before m when p is before m's month,
    -- never when p is m's month, and it is in [m - 90 days, m) when the month's last payment is.
    SELECT client_id, date_trunc('month', local(paid_at)) AS paid_month, MAX(paid_at) AS last_paid
    FROM payments
    -- a payment with no client makes nobody active
    WHERE client_id IS NOT NULL
    GROUP BY client_id, date_trunc('month', local(paid_at))
),
paid_months AS (
    SELECT DISTINCT date_trunc('month', local(paid_at)) AS paid_month FROM payments
),
months AS (
    -- The months whose first day a month's payments can make a client active on (or active on
    -- the next month's first day): 0 to 4 calendar months after it, since 90 days are less than 4
    -- months. Month arithmetic on this short list, not on every payment (it costs ~0.4 µs a value).
    SELECT paid_month, month_start, month_start - INTERVAL '90 days' AS active_from,
           month_start + INTERVAL '1 month' - INTERVAL '90 days' AS stays_from
    FROM (
        SELECT paid_month,
               CASE k WHEN 0 THEN paid_month
                      WHEN 1 THEN paid_month + INTERVAL '1 month'
                      WHEN 2 THEN paid_month + INTERVAL '2 months'
                      WHEN 3 THEN paid_month + INTERVAL '3 months'
                      ELSE paid_month + INTERVAL '4 months' END AS month_start
        FROM paid_months
        CROSS JOIN (SELECT 0 AS k UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3
                    UNION ALL SELECT 4) offsets
    ) candidates
    -- the period joined as a one-row table, not a WHERE clause: the optimizer would push a WHERE on
    -- month_start through the DISTINCT down to every payment row, month additions and all
    JOIN (SELECT $from AS period_from, $to AS period_to, $as_of AS period_as_of) period
      ON candidates.month_start >= period.period_from AND candidates.month_start < period.period_to
     AND candidates.month_start + INTERVAL '1 month' <= period.period_as_of
),
clients_by_month AS (
    -- each client active on a month's first day, once, and whether still active a month later
    SELECT m.month_start, p.client_id,
           MAX(CASE WHEN p.last_paid >= m.stays_from THEN 1 ELSE 0 END) AS stays
    FROM paid p JOIN months m ON m.paid_month = p.paid_month
    GROUP BY m.month_start, p.client_id
    HAVING MAX(CASE WHEN p.last_paid >= m.active_from AND p.last_paid < m.month_start THEN 1 ELSE 0 END) = 1
)
SELECT CAST(month_start AS DATE) AS month,
       COUNT(*) AS active,
       SUM(1 - stays) AS churned,
       CAST(SUM(1 - stays) AS DOUBLE) / CAST(COUNT(*) AS DOUBLE) AS churn
FROM clients_by_month
GROUP BY month_start
ORDER BY month_start
