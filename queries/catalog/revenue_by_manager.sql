-- name = "revenue_by_manager"
-- title = "Revenue by manager"
-- title_ru = "Выручка по менеджерам"
-- description_ru = "Выигранные сделки, закрытые в [from, to), по closed_by (кто вёл сделку в момент закрытия — даже после передачи): выручка = сумма, won_deals = число. Сделки без closed_by — группа 'unknown'. Имя показывается так, как позволяют права (аналитику — токен)."
-- family = "sales"
-- description = """
-- Won deals closed in [from, to), per closed_by (the staff member who owned the deal when it closed,
-- credited even after a handover): revenue = sum of amount, won_deals = count. Deals with no closed_by
-- form the group 'unknown'. The name is shown as the caller's policy allows (a token for analysts)."""
-- roles = ["owner", "team_lead", "manager", "analyst"]
-- chart = { kind = "bar", x = "manager", y = ["revenue"] }
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
-- name = "manager"
-- description = "staff id of closed_by, or 'unknown'"
-- [[columns]]
-- name = "name"
-- [[columns]]
-- name = "revenue"
-- unit = "money"
-- [[columns]]
-- name = "won_deals"
-- unit = "deals"
SELECT COALESCE(CAST(d.closed_by AS VARCHAR), 'unknown') AS manager,
       MAX(s.full_name) AS name,
       COALESCE(SUM(d.amount), 0) AS revenue,
       COUNT(*) AS won_deals
FROM deals d
LEFT JOIN staff s ON s.staff_id = d.closed_by
WHERE d.status = 'won'
  AND d.closed_at >= $from
  AND d.closed_at < $to
GROUP BY d.closed_by
ORDER BY revenue DESC, manager
