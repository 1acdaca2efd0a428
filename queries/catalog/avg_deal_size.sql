-- name = "avg_deal_size"
-- title = "Average deal size"
-- title_ru = "Средний размер сделки"
-- family = "sales"
-- description = """
-- Mean amount of won deals closed in [from, to); won deals without an amount are left out. Rounded once
-- to kopecks, half away from zero; NULL when there is no such deal."""
-- roles = ["owner", "team_lead", "manager", "analyst"]
-- chart = { kind = "kpi", x = "won_deals", y = ["avg_amount"] }
--
-- [[params]]
-- name = "from"
-- type = "timestamp"
-- default = "month_start(to, -12)"
-- description = "start of the period, inclusive (default: first day of the month 12 months before `to`)"
-- [[params]]
-- name = "to"
-- type = "timestamp"
-- default = "now"
-- description = "end of the period, exclusive (default: the snapshot time)"
--
-- [[columns]]
-- name = "won_deals"
-- unit = "deals"
-- [[columns]]
-- name = "avg_amount"
-- unit = "money"
SELECT COUNT(*) AS won_deals, ROUND(AVG(amount), 2) AS avg_amount
FROM deals
WHERE status = 'won' AND amount IS NOT NULL AND closed_at >= $from AND closed_at < $to
