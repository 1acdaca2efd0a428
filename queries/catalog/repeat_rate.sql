-- name = "repeat_rate"
-- title = "Repeat purchase rate"
-- title_ru = "Повторные покупки"
-- description_ru = "Среди клиентов хотя бы с одним платежом в [from, to): доля тех, у кого в этом периоде не меньше двух платежей."
-- family = "retention"
-- description = """
-- Among clients with at least one payment in [from, to): the share with at least two payments in it."""
-- roles = ["owner", "team_lead", "manager", "analyst"]
-- chart = { kind = "kpi", x = "payers", y = ["repeat_rate"] }
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
--
-- [[columns]]
-- name = "payers"
-- unit = "clients"
-- [[columns]]
-- name = "repeat_payers"
-- unit = "clients"
-- [[columns]]
-- name = "repeat_rate"
-- unit = "ratio"
WITH per AS (
    SELECT client_id, COUNT(*) AS n
    FROM payments
    WHERE paid_at >= $from AND paid_at < $to
    GROUP BY client_id
)
SELECT COUNT(*) AS payers,
       COALESCE(SUM(CASE WHEN n >= 2 THEN 1 ELSE 0 END), 0) AS repeat_payers,
       CAST(SUM(CASE WHEN n >= 2 THEN 1 ELSE 0 END) AS DOUBLE) / CAST(NULLIF(COUNT(*), 0) AS DOUBLE) AS repeat_rate
FROM per
