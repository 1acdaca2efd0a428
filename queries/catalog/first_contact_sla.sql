-- name = "first_contact_sla"
-- title = "First contact within 24 hours"
-- title_ru = "Первый контакт в течение суток"
-- description_ru = "Клиенты, созданные в [from, to): доля тех, с кем было исходящее взаимодействие (кем угодно, по любому каналу) в (created_at, created_at + 24 ч], по ответственному на момент создания — from_staff самой ранней смены ответственного (по changed_at, затем change_id), иначе текущий ответственный ('unknown' для NULL)."
-- family = "staff"
-- description = """
-- Clients created in [from, to): the share with an outbound interaction (by anyone, any channel) in
-- (created_at, created_at + 24 h], per owner at creation — the from_staff of the client's earliest
-- ownership change (by changed_at, then change_id), else the current owner ('unknown' for NULL)."""
-- roles = ["owner", "team_lead", "manager", "analyst"]
-- chart = { kind = "bar", x = "owner", y = ["sla_rate"] }
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
-- name = "owner"
-- [[columns]]
-- name = "new_clients"
-- unit = "clients"
-- [[columns]]
-- name = "contacted_24h"
-- unit = "clients"
-- [[columns]]
-- name = "sla_rate"
-- unit = "ratio"
WITH fresh AS (
    -- the end of the 24 hours once per client, not once per (client, interaction) pair in the join
    SELECT client_id, owner_id, created_at, created_at + INTERVAL '24 hours' AS sla_end FROM clients
    WHERE created_at >= $from AND created_at < $to
),
first_change AS (
    SELECT client_id, from_staff FROM (
        SELECT client_id, from_staff,
               ROW_NUMBER() OVER (PARTITION BY client_id ORDER BY changed_at, change_id) AS k
        FROM ownership_changes
    ) WHERE k = 1
),
contacted AS (
    SELECT DISTINCT f.client_id
    FROM fresh f
    JOIN interactions i
      ON i.client_id = f.client_id AND i.direction = 'outbound'
     AND i.occurred_at > f.created_at AND i.occurred_at <= f.sla_end
),
per AS (
    SELECT COALESCE(CAST(CASE WHEN fc.client_id IS NOT NULL THEN fc.from_staff ELSE f.owner_id END AS VARCHAR),
                    'unknown') AS owner,
           COUNT(*) AS new_clients,
           COUNT(c.client_id) AS contacted_24h
    FROM fresh f
    LEFT JOIN first_change fc ON fc.client_id = f.client_id
    LEFT JOIN contacted c ON c.client_id = f.client_id
    GROUP BY 1
)
SELECT owner, new_clients, contacted_24h,
       CAST(contacted_24h AS DOUBLE) / CAST(NULLIF(new_clients, 0) AS DOUBLE) AS sla_rate
FROM per
ORDER BY owner
