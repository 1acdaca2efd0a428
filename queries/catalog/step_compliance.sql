-- name = "step_compliance"
-- title = "Step compliance"
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
-- [[params]]
-- name = "to"
-- type = "timestamp"
-- default = "now"
-- description = "end of the period, exclusive (default: the snapshot time)"
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
WITH ch AS (
    SELECT change_id, deal_id, from_stage, changed_at, changed_by,
           LAG(changed_at) OVER (PARTITION BY deal_id ORDER BY changed_at, change_id) AS prev_at
    FROM deal_stage_changes
),
steps AS (
    SELECT ch.change_id, ch.changed_by, d.client_id, ch.changed_at,
           COALESCE(ch.prev_at, d.created_at) AS window_start
    FROM ch JOIN deals d ON d.deal_id = ch.deal_id
    WHERE ch.from_stage IS NOT NULL AND ch.changed_at >= $from AND ch.changed_at < $to
),
compliant AS (
    SELECT DISTINCT s.change_id
    FROM steps s
    JOIN interactions i
      ON i.staff_id = s.changed_by AND i.client_id = s.client_id AND i.direction = 'outbound'
     AND i.occurred_at >= s.window_start AND i.occurred_at < s.changed_at
),
per AS (
    SELECT COALESCE(CAST(s.changed_by AS VARCHAR), 'unknown') AS staff,
           COUNT(*) AS steps, COUNT(c.change_id) AS compliant
    FROM steps s LEFT JOIN compliant c ON c.change_id = s.change_id
    GROUP BY 1
)
SELECT staff, steps, compliant,
       CAST(compliant AS DOUBLE) / CAST(NULLIF(steps, 0) AS DOUBLE) AS compliance
FROM per
ORDER BY staff
