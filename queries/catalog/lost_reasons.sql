-- name = "lost_reasons"
-- title = "Why deals are lost"
-- title_ru = "Почему сделки проигрывают"
-- description_ru = "Проигранные сделки (статус 'lost') с closed_at в [from, to) по причине проигрыша ('unknown', если не указана): число и сумма."
-- family = "funnel"
-- description = """
-- Deals lost (status 'lost') with closed_at in [from, to), per lost_reason ('unknown' when NULL or blank):
-- count and sum of amount."""
-- roles = ["owner", "team_lead", "manager", "analyst"]
-- chart = { kind = "bar", x = "reason", y = ["deals"] }
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
-- name = "reason"
-- [[columns]]
-- name = "deals"
-- unit = "deals"
-- [[columns]]
-- name = "amount"
-- unit = "money"
SELECT COALESCE(NULLIF(TRIM(lost_reason), ''), 'unknown') AS reason,
       COUNT(*) AS deals,
       COALESCE(SUM(amount), 0) AS amount
FROM deals
WHERE status = 'lost' AND closed_at >= $from AND closed_at < $to
GROUP BY 1
ORDER BY deals DESC, reason
