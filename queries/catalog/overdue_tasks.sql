-- name = "overdue_tasks"
-- title = "Overdue tasks"
-- title_ru = "Просроченные задачи"
-- description_ru = "По каждому сотруднику ('unknown' для NULL): открытые задачи (без completed_at) со сроком до as_of, а из задач со сроком в [from, to) — сколько выполнено в срок (completed_at ≤ due_at) и какая это доля. Сотрудник без того и другого строки не даёт."
-- family = "staff"
-- description = """
-- Per staff member ('unknown' for NULL): open tasks (no completed_at) with due_at before as_of, and of
-- the tasks due in [from, to), how many were completed on time (completed_at <= due_at) and that share.
-- Staff with neither have no row."""
-- roles = ["owner", "team_lead", "manager", "analyst"]
-- chart = { kind = "bar", x = "staff", y = ["overdue_now"] }
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
-- description = "the instant 'now' for overdue (default: the snapshot time)"
-- description_ru = "момент «сейчас» для просрочки (по умолчанию — время снимка)"
--
-- [[columns]]
-- name = "staff"
-- [[columns]]
-- name = "overdue_now"
-- unit = "tasks"
-- [[columns]]
-- name = "due_in_period"
-- unit = "tasks"
-- [[columns]]
-- name = "on_time"
-- unit = "tasks"
-- [[columns]]
-- name = "on_time_rate"
-- unit = "ratio"
WITH t AS (
    SELECT COALESCE(CAST(staff_id AS VARCHAR), 'unknown') AS staff,
           CASE WHEN completed_at IS NULL AND due_at < $as_of THEN 1 ELSE 0 END AS overdue,
           CASE WHEN due_at >= $from AND due_at < $to THEN 1 ELSE 0 END AS due,
           CASE WHEN due_at >= $from AND due_at < $to AND completed_at <= due_at THEN 1 ELSE 0 END AS on_time
    FROM tasks
),
per AS (
    SELECT staff, SUM(overdue) AS overdue_now, SUM(due) AS due_in_period, SUM(on_time) AS on_time
    FROM t GROUP BY staff
)
SELECT staff, overdue_now, due_in_period, on_time,
       CAST(on_time AS DOUBLE) / CAST(NULLIF(due_in_period, 0) AS DOUBLE) AS on_time_rate
FROM per
WHERE overdue_now > 0 OR due_in_period > 0
ORDER BY overdue_now DESC, staff
