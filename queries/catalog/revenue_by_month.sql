-- name = "revenue_by_month"
-- title = "Revenue by month"
-- title_ru = "Выручка по месяцам"
-- description_ru = "Выигранные сделки, закрытые в [from, to), по календарному месяцу closed_at в часовом поясе отчётов: выручка = сумма, и число выигранных сделок. Месяц без выигранных сделок строки не даёт. Засчитывается закрывшему сделку; по правам менеджера тот же SQL охватывает только его сделки."
-- family = "sales"
-- description = """
-- Won deals closed in [from, to), per calendar month of closed_at (in the reporting zone): revenue = sum of amount,
-- and the count of won deals. Months with no won deal have no row. Credited to whoever closed the deal;
-- under a manager's policy the same SQL covers that manager's deals only."""
-- roles = ["owner", "team_lead", "manager", "analyst"]
-- chart = { kind = "bar", x = "month", y = ["revenue"] }
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
-- description = "end of the period, exclusive (default: the snapshot's time)"
-- description_ru = "конец периода, не включается (по умолчанию — время снимка)"
--
-- [[columns]]
-- name = "month"
-- description = "first day of the month"
-- [[columns]]
-- name = "revenue"
-- unit = "money"
-- description = "sum of amount of won deals"
-- [[columns]]
-- name = "won_deals"
-- unit = "deals"
SELECT CAST(date_trunc('month', local(closed_at)) AS DATE) AS month,
       COALESCE(SUM(amount), 0) AS revenue,
       COUNT(*) AS won_deals
FROM deals
WHERE status = 'won'
  AND closed_at >= $from
  AND closed_at < $to
GROUP BY 1
ORDER BY 1
