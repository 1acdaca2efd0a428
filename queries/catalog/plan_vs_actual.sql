-- name = "plan_vs_actual"
-- title = "Plan vs actual"
-- title_ru = "План и факт"
-- description_ru = "Месяцы, первый день которых лежит в [from, to). Строки компании (scope 'company'): план без staff_id против всей выигранной выручки месяца. Строки менеджеров (scope — id менеджера с должностью manager или team_lead): его план против выручки по closed_by. attainment = выручка / план; NULL без плана или при плане 0. Параметр level оставляет все строки, только компанию или только менеджеров."
-- family = "sales"
-- description = """
-- Months whose first day lies in [from, to). Company rows (scope 'company'): the target row with NULL
-- staff_id vs all won revenue closed in the month (within [from, to)). Manager rows (scope = staff id of
-- a manager: position manager or team_lead): that manager's target vs revenue credited by closed_by. attainment = revenue / target, NULL without a
-- target or with a target of 0. A month with revenue but no target has a NULL target."""
-- roles = ["owner", "team_lead", "manager", "analyst"]
-- chart = { kind = "line", x = "month", y = ["revenue", "target"], series = "scope" }
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
-- name = "level"
-- type = "text"
-- default = "all"
-- allowed = ["all", "company", "staff"]
-- description = "which rows: all, the company's only, or each manager's only (a manager's own plan)"
-- description_ru = "какие строки: все (all), только план компании (company) или только планы менеджеров (staff) — личный план"
--
-- [[columns]]
-- name = "scope"
-- description = "'company' or the manager's staff id"
-- [[columns]]
-- name = "month"
-- [[columns]]
-- name = "target"
-- unit = "money"
-- [[columns]]
-- name = "revenue"
-- unit = "money"
-- [[columns]]
-- name = "attainment"
-- unit = "ratio"
WITH managers AS (
    -- manager rows are for managers (position manager or team_lead), not for every staff member with
    -- a target or a won deal
    SELECT staff_id FROM staff WHERE position IN ('manager', 'team_lead')
),
levels AS (
    -- 0: the company's rows, 1: the managers' rows. Each won deal and each target is read once and
    -- counted at both levels (DataFusion computes a CTE again at every reference).
    SELECT 0 AS ord UNION ALL SELECT 1
),
rev AS (
    SELECT CAST(date_trunc('month', local(closed_at)) AS DATE) AS month, closed_by, SUM(amount) AS revenue
    FROM deals
    WHERE status = 'won' AND closed_at >= $from AND closed_at < $to
    GROUP BY 1, 2
),
tgt AS (
    SELECT month, staff_id, revenue_target
    FROM targets
    WHERE CAST(month AS TIMESTAMP) >= CAST($from AS TIMESTAMP)
      AND CAST(month AS TIMESTAMP) < CAST($to AS TIMESTAMP)
),
rows_ AS (
    SELECT CASE WHEN l.ord = 0 THEN 'company' ELSE CAST(r.closed_by AS VARCHAR) END AS scope, l.ord,
           r.month, CAST(NULL AS DECIMAL(18, 2)) AS target, r.revenue
    FROM rev r
    CROSS JOIN levels l
    LEFT JOIN managers m ON m.staff_id = r.closed_by
    WHERE CAST(r.month AS TIMESTAMP) >= CAST($from AS TIMESTAMP)
      AND (l.ord = 0 OR m.staff_id IS NOT NULL)
    UNION ALL
    SELECT CASE WHEN l.ord = 0 THEN 'company' ELSE CAST(t.staff_id AS VARCHAR) END, l.ord,
           t.month, t.revenue_target, CAST(0 AS DECIMAL(18, 2))
    FROM tgt t
    CROSS JOIN levels l
    LEFT JOIN managers m ON m.staff_id = t.staff_id
    WHERE (l.ord = 0 AND t.staff_id IS NULL) OR (l.ord = 1 AND m.staff_id IS NOT NULL)
),
agg AS (
    SELECT scope, ord, month, SUM(target) AS target, COALESCE(SUM(revenue), 0) AS revenue
    FROM rows_ GROUP BY scope, ord, month
)
SELECT scope, month, target, revenue,
       CAST(revenue AS DOUBLE) / CAST(NULLIF(target, 0) AS DOUBLE) AS attainment
FROM agg
WHERE $level = 'all' OR ($level = 'company' AND ord = 0) OR ($level = 'staff' AND ord = 1)
ORDER BY ord, scope, month
