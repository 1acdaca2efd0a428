-- name = "sales_cycle"
-- title = "Sales cycle"
-- title_ru = "Цикл сделки"
-- description_ru = "Выигранные сделки, закрытые в [from, to): дней от created_at до closed_at (секунды / 86 400, дробно), среднее и точная медиана. Сделки без created_at не учитываются."
-- family = "sales"
-- description = """
-- Won deals closed in [from, to): elapsed days from created_at to closed_at (seconds / 86 400,
-- fractional), their mean and exact median (percentile_cont 0.5). Deals without created_at are left out."""
-- roles = ["owner", "team_lead", "manager", "analyst"]
-- chart = { kind = "kpi", x = "won_deals", y = ["median_days"] }
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
-- name = "won_deals"
-- unit = "deals"
-- [[columns]]
-- name = "mean_days"
-- unit = "days"
-- [[columns]]
-- name = "median_days"
-- unit = "days"
WITH cycle AS (
    SELECT (date_part('epoch', closed_at) - date_part('epoch', created_at)) / 86400.0 AS days
    FROM deals
    WHERE status = 'won' AND created_at IS NOT NULL AND closed_at >= $from AND closed_at < $to
)
SELECT COUNT(*) AS won_deals, AVG(days) AS mean_days,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY days) AS median_days
FROM cycle
