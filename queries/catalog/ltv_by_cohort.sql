-- name = "ltv_by_cohort"
-- title = "Lifetime value by cohort"
-- title_ru = "Пожизненная ценность по когортам"
-- description_ru = "Когорта — календарный месяц первого платежа клиента, для когорт с первым платежом в [from, to). ltv — среднее по клиентам когорты их платежей в [первый платёж, первый платёж + 12 календарных месяцев) без платежей позже as_of (платёж ровно в as_of учитывается); округляется один раз до копеек. complete = false, если окно хотя бы одного клиента заканчивается позже as_of."
-- family = "retention"
-- description = """
-- Cohort = calendar month of a client's first payment, for cohorts whose first payment falls in
-- [from, to). ltv = mean over the cohort's clients of their payments in [first payment, first payment +
-- 12 calendar months), ignoring payments after as_of (one exactly at as_of counts); rounded once to
-- cents. complete is false
-- when any client's window ends after as_of."""
-- roles = ["owner", "team_lead", "manager", "analyst"]
-- chart = { kind = "bar", x = "cohort", y = ["ltv"] }
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
-- name = "cohort"
-- [[columns]]
-- name = "clients"
-- unit = "clients"
-- [[columns]]
-- name = "ltv"
-- unit = "money"
-- [[columns]]
-- name = "complete"
WITH firsts AS (
    SELECT client_id, MIN(paid_at) AS first_paid
    FROM payments WHERE paid_at <= $as_of
    GROUP BY client_id
),
cohort AS (
    SELECT client_id, first_paid, first_paid + INTERVAL '12 months' AS window_end
    FROM firsts WHERE first_paid >= $from AND first_paid < $to
),
per_client AS (
    SELECT c.client_id, c.first_paid, c.window_end, COALESCE(SUM(p.amount), 0) AS total
    FROM cohort c
    JOIN payments p ON p.client_id = c.client_id
     AND p.paid_at >= c.first_paid AND p.paid_at < c.window_end AND p.paid_at <= $as_of
    GROUP BY c.client_id, c.first_paid, c.window_end
)
SELECT CAST(date_trunc('month', local(first_paid)) AS DATE) AS cohort,
       COUNT(*) AS clients,
       ROUND(AVG(total), 2) AS ltv,
       bool_and(window_end <= $as_of) AS complete
FROM per_client
GROUP BY 1
ORDER BY 1
