-- name = "cohort_retention"
-- title = "Cohort retention"
-- title_ru = "Удержание по когортам"
-- description_ru = "Когорта — календарный месяц первого платежа клиента; берутся когорты с первым платежом в [from, to). Для когорты c и сдвига k = 0..months: доля клиентов когорты, заплативших хотя бы раз в месяце c+k. Ячейки, чей месяц позже месяца последнего платежа в данных, не выводятся; ячейки внутри данных без плательщиков равны 0."
-- family = "retention"
-- description = """
-- Cohort = calendar month of a client's first payment; cohorts whose first payment falls in
-- [from, to). For cohort c and offset k = 0..months: the share of the cohort's clients with at least
-- one payment in month c+k. Cells whose month c+k lies after the month of the latest payment in the
-- data are omitted; cells inside the data with no payer are 0."""
-- roles = ["owner", "team_lead", "manager", "analyst"]
-- chart = { kind = "heatmap", x = "month_offset", y = ["retention"], series = "cohort" }
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
-- name = "months"
-- type = "int"
-- default = "12"
-- min = 0
-- max = 120
-- description = "largest offset k (0..120)"
-- description_ru = "наибольшее смещение k (0..120)"
--
-- [[columns]]
-- name = "cohort"
-- description = "first day of the cohort's month"
-- [[columns]]
-- name = "month_offset"
-- [[columns]]
-- name = "cohort_size"
-- unit = "clients"
-- [[columns]]
-- name = "active_clients"
-- unit = "clients"
-- [[columns]]
-- name = "retention"
-- unit = "ratio"
WITH pay AS (
    SELECT client_id, paid_at,
           CAST(date_part('year', local(paid_at)) AS BIGINT) * 12 + CAST(date_part('month', local(paid_at)) AS BIGINT) - 1 AS month_index
    FROM payments
    WHERE paid_at IS NOT NULL
),
firsts AS (
    SELECT client_id, MIN(paid_at) AS first_paid, MIN(month_index) AS cohort_index
    FROM pay GROUP BY client_id
),
members AS (
    SELECT client_id, cohort_index FROM firsts WHERE first_paid >= $from AND first_paid < $to
),
sizes AS (
    SELECT cohort_index, COUNT(*) AS cohort_size FROM members GROUP BY cohort_index
),
latest AS (
    SELECT MAX(month_index) AS latest_index FROM pay
),
offsets AS (
    SELECT unnest(range(0, 121)) AS k
),
grid AS (
    SELECT s.cohort_index, s.cohort_size, o.k
    FROM sizes s CROSS JOIN offsets o CROSS JOIN latest l
    WHERE o.k <= $months AND s.cohort_index + o.k <= l.latest_index
),
active AS (
    SELECT m.cohort_index, p.month_index - m.cohort_index AS k, COUNT(DISTINCT p.client_id) AS active_clients
    FROM members m JOIN pay p ON p.client_id = m.client_id
    GROUP BY 1, 2
)
SELECT make_date(CAST(g.cohort_index / 12 AS INT), CAST(g.cohort_index % 12 + 1 AS INT), 1) AS cohort,
       g.k AS month_offset,
       g.cohort_size,
       COALESCE(a.active_clients, 0) AS active_clients,
       CAST(COALESCE(a.active_clients, 0) AS DOUBLE) / CAST(g.cohort_size AS DOUBLE) AS retention
FROM grid g
LEFT JOIN active a ON a.cohort_index = g.cohort_index AND a.k = g.k
ORDER BY cohort, month_offset
