-- name = "stalled_deals"
-- title = "Stalled deals"
-- title_ru = "Зависшие сделки"
-- description_ru = "Открытые сделки без смены этапа и без взаимодействий по сделке (interactions.deal_id) в тихом окне [as_of − days, as_of), по текущему ответственному ('unknown' для NULL): число и сумма."
-- family = "funnel"
-- description = """
-- Open deals with no stage change and no interaction tied to the deal (interactions.deal_id) in the
-- quiet window [as_of - days, as_of), per current owner ('unknown' for NULL): count and amount."""
-- roles = ["owner", "team_lead", "manager", "analyst"]
-- chart = { kind = "bar", x = "owner", y = ["stalled_deals"] }
--
-- [[params]]
-- name = "as_of"
-- type = "timestamp"
-- default = "now"
-- description = "end of the quiet window, exclusive (default: the snapshot time)"
-- description_ru = "конец окна тишины, не включается (по умолчанию — время снимка)"
-- [[params]]
-- name = "days"
-- type = "int"
-- default = "14"
-- min = 1
-- max = 3660
-- description = "length of the quiet window in days"
-- description_ru = "длина окна тишины в днях"
--
-- [[columns]]
-- name = "owner"
-- [[columns]]
-- name = "stalled_deals"
-- unit = "deals"
-- [[columns]]
-- name = "amount"
-- unit = "money"
WITH touched AS (
    -- the window start is a constant once parameters are bound, so the scans can prune by time
    SELECT c.deal_id FROM deal_stage_changes c
    WHERE c.changed_at >= $as_of - CAST(concat(CAST($days AS VARCHAR), ' days') AS INTERVAL)
      AND c.changed_at < $as_of AND c.deal_id IS NOT NULL
    UNION
    SELECT i.deal_id FROM interactions i
    WHERE i.occurred_at >= $as_of - CAST(concat(CAST($days AS VARCHAR), ' days') AS INTERVAL)
      AND i.occurred_at < $as_of AND i.deal_id IS NOT NULL
)
SELECT COALESCE(CAST(d.owner_id AS VARCHAR), 'unknown') AS owner,
       COUNT(*) AS stalled_deals,
       COALESCE(SUM(d.amount), 0) AS amount
FROM deals d
WHERE d.status = 'open'
  AND NOT EXISTS (SELECT 1 FROM touched t WHERE t.deal_id = d.deal_id)
GROUP BY 1
ORDER BY stalled_deals DESC, owner
