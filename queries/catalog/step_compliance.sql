-- name = "step_compliance"
-- title = "Step compliance"
-- title_ru = "Соблюдение шагов"
-- description_ru = "Смены этапа в [from, to) с непустым from_stage (создание сделки — не шаг). Смена соблюдает порядок, если у changed_by было хотя бы одно исходящее взаимодействие с клиентом сделки в [предыдущая смена сделки, эта смена) — или с created_at сделки, если более ранней смены нет. Доля по changed_by ('unknown' для NULL)."
-- family = "staff"
-- description = """
-- Stage changes in [from, to) with a non-NULL from_stage (a deal's creation is not a step). A change is
-- compliant when changed_by had at least one outbound interaction (any channel) with the deal's client in
-- [the deal's previous change, this change) — or from the deal's created_at when no earlier change is
-- recorded. Rate per changed_by ('unknown' for NULL)."""
-- roles = ["owner", "team_lead", "manager", "analyst"]
-- chart = { kind = "bar", x = "staff", y = ["compliance"] }
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
-- name = "staff"
-- [[columns]]
-- name = "steps"
-- unit = "changes"
-- [[columns]]
-- name = "compliant"
-- unit = "changes"
-- [[columns]]
-- name = "compliance"
-- unit = "ratio"
WITH per AS (
    SELECT COALESCE(CAST(changed_by AS VARCHAR), 'unknown') AS staff,
           COUNT(*) AS steps, SUM(CASE WHEN compliant THEN 1 ELSE 0 END) AS compliant
    FROM step_checks
    WHERE changed_at >= $from AND changed_at < $to
    GROUP BY 1
)
SELECT staff, steps, compliant,
       CAST(compliant AS DOUBLE) / CAST(NULLIF(steps, 0) AS DOUBLE) AS compliance
FROM per
ORDER BY staff
