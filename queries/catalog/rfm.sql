-- name = "rfm"
-- title = "RFM segments"
-- title_ru = "RFM-сегменты"
-- description_ru = "На день as_of, по каждому клиенту с платежом до as_of: давность — полных дней от даты последнего платежа до даты as_of; частота — платежей в [as_of − 12 месяцев, as_of); деньги — их сумма. Баллы 1..5 по NTILE(5) от худших к лучшим (при равенстве — по client_id). Сегмент, первое совпадение: champions R≥4 и F≥4; loyal F≥4; new R≥4 и F≤2; at_risk R≤2 и F≥3; hibernating R≤2 и F≤2; иначе needs_attention."
-- family = "retention"
-- description = """
-- As of day as_of, per client with a payment before as_of: recency = whole days from the last payment's
-- date to as_of's date; frequency = payments in [as_of - 12 months, as_of); monetary = their sum. Scores
-- 1..5 by NTILE(5) over clients ordered worst to best (ties by client_id ascending), 5 = most recent /
-- most frequent / highest spend. Segment, first match: champions R>=4 and F>=4; loyal F>=4; new R>=4
-- and F<=2; at_risk R<=2 and F>=3; hibernating R<=2 and F<=2; otherwise needs_attention."""
-- roles = ["owner", "team_lead", "manager", "analyst"]
-- chart = { kind = "table", x = "segment", y = ["monetary"] }
--
-- [[params]]
-- name = "as_of"
-- type = "timestamp"
-- default = "now"
-- description = "the instant the metric is computed as of (default: the snapshot time)"
-- description_ru = "момент, на который считается показатель (по умолчанию — время снимка)"
--
-- [[columns]]
-- name = "client_id"
-- [[columns]]
-- name = "name"
-- [[columns]]
-- name = "recency_days"
-- unit = "days"
-- [[columns]]
-- name = "frequency"
-- unit = "payments"
-- [[columns]]
-- name = "monetary"
-- unit = "money"
-- [[columns]]
-- name = "r"
-- [[columns]]
-- name = "f"
-- [[columns]]
-- name = "m"
-- [[columns]]
-- name = "segment"
WITH base AS (
    SELECT client_id,
           CAST(local($as_of) AS DATE) - CAST(local(MAX(paid_at)) AS DATE) AS recency_days,
           SUM(CASE WHEN paid_at >= $as_of - INTERVAL '12 months' THEN 1 ELSE 0 END) AS frequency,
           COALESCE(SUM(CASE WHEN paid_at >= $as_of - INTERVAL '12 months' THEN amount END), 0) AS monetary
    FROM payments
    WHERE paid_at < $as_of
    GROUP BY client_id
),
scored AS (
    SELECT client_id, recency_days, frequency, monetary,
           NTILE(5) OVER (ORDER BY recency_days DESC, client_id) AS r,
           NTILE(5) OVER (ORDER BY frequency, client_id) AS f,
           NTILE(5) OVER (ORDER BY monetary, client_id) AS m
    FROM base
)
SELECT s.client_id, c.name, s.recency_days, s.frequency, s.monetary, s.r, s.f, s.m,
       CASE WHEN s.r >= 4 AND s.f >= 4 THEN 'champions'
            WHEN s.f >= 4 THEN 'loyal'
            WHEN s.r >= 4 AND s.f <= 2 THEN 'new'
            WHEN s.r <= 2 AND s.f >= 3 THEN 'at_risk'
            WHEN s.r <= 2 AND s.f <= 2 THEN 'hibernating'
            ELSE 'needs_attention' END AS segment
FROM scored s
LEFT JOIN clients c ON c.client_id = s.client_id
ORDER BY s.client_id
