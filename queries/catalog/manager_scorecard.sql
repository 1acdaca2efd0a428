-- name = "manager_scorecard"
-- title = "Manager scorecard"
-- title_ru = "Карточки менеджеров"
-- description_ru = "По строке на менеджера (должность manager или team_lead), работавшего в какой-то момент в [from, to): выигранная выручка (по closed_by), доля выигранных, исходящие активности, точная медиана времени ответа (как в response_time), соблюдение шагов и выполнение плана = выручка в месяцах с планом / сумма этих планов."
-- family = "staff"
-- description = """
-- One row per manager (position manager or team_lead) employed at some time in [from, to) (hired_at
-- before `to`, left_at NULL or not before `from`): won revenue credited by closed_by, win rate, outbound
-- activities, exact median response time (as in response_time: answers before as_of), step compliance,
-- and plan attainment = revenue in months with a target / the sum of those targets."""
-- roles = ["owner", "team_lead", "manager", "analyst"]
-- chart = { kind = "table", x = "manager", y = ["revenue", "win_rate", "attainment"] }
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
-- description = "answers after this instant do not count (default: the snapshot time)"
-- description_ru = "ответы после этого момента не учитываются (по умолчанию — время снимка)"
--
-- [[columns]]
-- name = "manager"
-- [[columns]]
-- name = "name"
-- [[columns]]
-- name = "revenue"
-- unit = "money"
-- [[columns]]
-- name = "win_rate"
-- unit = "ratio"
-- [[columns]]
-- name = "activities"
-- unit = "interactions"
-- [[columns]]
-- name = "median_response_minutes"
-- unit = "min"
-- [[columns]]
-- name = "step_compliance"
-- unit = "ratio"
-- [[columns]]
-- name = "attainment"
-- unit = "ratio"
WITH managers AS (
    SELECT staff_id, full_name FROM staff
    WHERE position IN ('manager', 'team_lead')
      AND (hired_at IS NULL OR hired_at < CAST(local($to) AS DATE)
           OR (hired_at = CAST(local($to) AS DATE) AND local($to) > date_trunc('day', local($to))))
      AND (left_at IS NULL OR left_at >= CAST(local($from) AS DATE))
),
closed AS (
    SELECT closed_by AS staff_id,
           COALESCE(SUM(CASE WHEN status = 'won' THEN amount END), 0) AS revenue,
           SUM(CASE WHEN status = 'won' THEN 1 ELSE 0 END) AS won,
           SUM(CASE WHEN status = 'lost' THEN 1 ELSE 0 END) AS lost
    FROM deals
    WHERE status IN ('won', 'lost') AND closed_at >= $from AND closed_at < $to
    GROUP BY closed_by
),
activity AS (
    SELECT staff_id, COUNT(*) AS activities FROM interactions
    WHERE direction = 'outbound' AND occurred_at >= $from AND occurred_at < $to
    GROUP BY staff_id
),
answers AS (
    SELECT answered_by AS staff_id,
           (date_part('epoch', answered_at) - date_part('epoch', occurred_at)) / 60.0 AS minutes
    FROM inbound_answers
    WHERE occurred_at >= $from AND occurred_at < $to AND answered_at < $as_of
),
response AS (
    -- exact median (linear interpolation at (n-1)/2)
    SELECT staff_id, percentile_exact(minutes, 0.5) AS median_minutes
    FROM answers GROUP BY staff_id
),
steps AS (
    SELECT changed_by AS staff_id, COUNT(*) AS steps,
           SUM(CASE WHEN compliant THEN 1 ELSE 0 END) AS compliant
    FROM step_checks
    WHERE changed_at >= $from AND changed_at < $to
    GROUP BY changed_by
),
targets_ AS (
    SELECT staff_id, month, SUM(revenue_target) AS target
    FROM targets
    WHERE staff_id IS NOT NULL
      AND CAST(month AS TIMESTAMP) >= CAST($from AS TIMESTAMP)
      AND CAST(month AS TIMESTAMP) < CAST($to AS TIMESTAMP)
    GROUP BY staff_id, month
),
monthly AS (
    SELECT closed_by AS staff_id, CAST(date_trunc('month', local(closed_at)) AS DATE) AS month,
           SUM(amount) AS revenue
    FROM deals
    WHERE status = 'won' AND closed_at >= $from AND closed_at < $to
    GROUP BY 1, 2
),
plan AS (
    SELECT t.staff_id, COALESCE(SUM(m.revenue), 0) AS revenue, SUM(t.target) AS target
    FROM targets_ t
    LEFT JOIN monthly m ON m.staff_id = t.staff_id AND m.month = t.month
    GROUP BY t.staff_id
)
SELECT CAST(m.staff_id AS VARCHAR) AS manager,
       m.full_name AS name,
       COALESCE(c.revenue, 0) AS revenue,
       CAST(c.won AS DOUBLE) / CAST(NULLIF(c.won + c.lost, 0) AS DOUBLE) AS win_rate,
       COALESCE(a.activities, 0) AS activities,
       r.median_minutes AS median_response_minutes,
       CAST(s.compliant AS DOUBLE) / CAST(NULLIF(s.steps, 0) AS DOUBLE) AS step_compliance,
       CAST(p.revenue AS DOUBLE) / CAST(NULLIF(p.target, 0) AS DOUBLE) AS attainment
FROM managers m
LEFT JOIN closed c ON c.staff_id = m.staff_id
LEFT JOIN activity a ON a.staff_id = m.staff_id
LEFT JOIN response r ON r.staff_id = m.staff_id
LEFT JOIN steps s ON s.staff_id = m.staff_id
LEFT JOIN plan p ON p.staff_id = m.staff_id
ORDER BY manager
