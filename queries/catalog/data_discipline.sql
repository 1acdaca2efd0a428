-- name = "data_discipline"
-- title = "Data discipline"
-- title_ru = "Дисциплина данных"
-- description_ru = "По каждому менеджеру (должность manager или team_lead): доля его открытых сделок с суммой больше нуля и ожидаемой датой закрытия; доля его клиентов с телефоном или e-mail (пустые строки считаются отсутствием); доля его звонков в [from, to) с записанным результатом; и среднее из определённых долей. Менеджер без всех трёх строки не даёт."
-- family = "staff"
-- description = """
-- Per manager (staff whose position is manager or team_lead): the share of their open deals with
-- amount > 0 and expected_close set; the share of the clients they own with a phone or an e-mail (blank
-- strings count as missing); the share of their calls made in [from, to) with an outcome; and the mean
-- of the shares that are defined. Managers with none of the three have no row."""
-- roles = ["owner", "team_lead", "manager", "analyst"]
-- chart = { kind = "bar", x = "manager", y = ["discipline"] }
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
-- [[columns]]
-- name = "open_deals_complete"
-- unit = "ratio"
-- [[columns]]
-- name = "clients_reachable"
-- unit = "ratio"
-- [[columns]]
-- name = "calls_with_outcome"
-- unit = "ratio"
-- [[columns]]
-- name = "discipline"
-- unit = "ratio"
WITH managers AS (
    SELECT staff_id FROM staff WHERE position IN ('manager', 'team_lead')
),
d AS (
    SELECT owner_id AS staff_id, COUNT(*) AS n,
           SUM(CASE WHEN amount > 0 AND expected_close IS NOT NULL THEN 1 ELSE 0 END) AS ok
    FROM deals WHERE status = 'open' GROUP BY owner_id
),
c AS (
    SELECT owner_id AS staff_id, COUNT(*) AS n,
           SUM(CASE WHEN NULLIF(TRIM(phone), '') IS NOT NULL OR NULLIF(TRIM(email), '') IS NOT NULL
                    THEN 1 ELSE 0 END) AS ok
    FROM clients GROUP BY owner_id
),
k AS (
    SELECT staff_id, COUNT(*) AS n,
           SUM(CASE WHEN NULLIF(TRIM(outcome), '') IS NOT NULL THEN 1 ELSE 0 END) AS ok
    FROM interactions
    WHERE channel = 'call' AND occurred_at >= $from AND occurred_at < $to
    GROUP BY staff_id
),
shares AS (
    SELECT CAST(m.staff_id AS VARCHAR) AS manager,
           CAST(d.ok AS DOUBLE) / CAST(NULLIF(d.n, 0) AS DOUBLE) AS s1,
           CAST(c.ok AS DOUBLE) / CAST(NULLIF(c.n, 0) AS DOUBLE) AS s2,
           CAST(k.ok AS DOUBLE) / CAST(NULLIF(k.n, 0) AS DOUBLE) AS s3
    FROM managers m
    LEFT JOIN d ON d.staff_id = m.staff_id
    LEFT JOIN c ON c.staff_id = m.staff_id
    LEFT JOIN k ON k.staff_id = m.staff_id
)
SELECT manager, s1 AS open_deals_complete, s2 AS clients_reachable, s3 AS calls_with_outcome,
       (COALESCE(s1, 0) + COALESCE(s2, 0) + COALESCE(s3, 0))
         / CAST(NULLIF(CASE WHEN s1 IS NULL THEN 0 ELSE 1 END + CASE WHEN s2 IS NULL THEN 0 ELSE 1 END
                       + CASE WHEN s3 IS NULL THEN 0 ELSE 1 END, 0) AS DOUBLE) AS discipline
FROM shares
WHERE s1 IS NOT NULL OR s2 IS NOT NULL OR s3 IS NOT NULL
ORDER BY manager
