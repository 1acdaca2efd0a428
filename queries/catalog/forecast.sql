-- name = "forecast"
-- title = "Sales forecast"
-- title_ru = "Прогноз продаж"
-- description_ru = "Открытые сделки по месяцу ожидаемого закрытия (месяц NULL — без даты): сумма amount × p, где p для воронки и текущего этапа сделки — доля выигранных среди сделок, закрытых (выигранных или проигранных) за 12 месяцев до as_of и дошедших до этого этапа (вошедших в него или в любой более поздний не проигрышный этап, по deal_stage_changes). Этап, до которого такие сделки не доходили, вероятности не имеет: его сделки — в столбцах «без вероятности». Взвешенная сумма считается в десятичных числах и округляется один раз, половина — от нуля, до копеек."
-- family = "sales"
-- description = """
-- Open deals by month of expected_close (NULL month: no expected_close): sum of amount × p, where p for
-- the deal's pipeline and current stage = among deals closed (won or lost) in the 12 months before as_of
-- that reached the stage (entered it or any later non-lost stage, per deal_stage_changes), the share that
-- ended won. A stage no such deal reached has no p: its deals are reported in the unforecast columns.
-- weighted_amount is computed in decimal (amounts of one probability summed exactly, times won / reached
-- to 18 digits below the cent) and rounded once, half away from zero, to cents."""
-- roles = ["owner", "team_lead", "manager", "analyst"]
-- chart = { kind = "bar", x = "month", y = ["weighted_amount"] }
--
-- [[params]]
-- name = "as_of"
-- type = "timestamp"
-- default = "now"
-- description = "the instant the forecast is made (default: the snapshot time)"
-- description_ru = "момент, на который строится прогноз (по умолчанию — время снимка)"
--
-- [[columns]]
-- name = "month"
-- [[columns]]
-- name = "deals"
-- unit = "deals"
-- [[columns]]
-- name = "amount"
-- unit = "money"
-- [[columns]]
-- name = "weighted_amount"
-- unit = "money"
-- [[columns]]
-- name = "unforecast_deals"
-- unit = "deals"
-- [[columns]]
-- name = "unforecast_amount"
-- unit = "money"
WITH stages AS (
    SELECT pipeline, stage, position FROM pipeline_stages WHERE kind <> 'lost'
),
closed AS (
    SELECT deal_id, pipeline, status FROM deals
    WHERE status IN ('won', 'lost')
      AND closed_at >= $as_of - INTERVAL '12 months' AND closed_at < $as_of
),
furthest AS (
    SELECT c.deal_id, c.pipeline, c.status, r.max_position
    FROM closed c JOIN deal_reach r ON r.deal_id = c.deal_id
),
p AS (
    SELECT st.pipeline, st.stage, COUNT(f.deal_id) AS reached,
           SUM(CASE WHEN f.status = 'won' THEN 1 ELSE 0 END) AS won
    FROM stages st
    LEFT JOIN furthest f ON f.pipeline = st.pipeline AND f.max_position >= st.position
    GROUP BY st.pipeline, st.stage
),
open_deals AS (
    SELECT CAST(date_trunc('month', d.expected_close) AS DATE) AS month, d.amount, p.won, p.reached
    FROM deals d
    LEFT JOIN p ON p.pipeline = d.pipeline AND p.stage = d.stage
    WHERE d.status = 'open'
),
by_p AS (
    -- the open deals of one month with one probability: their amounts summed exactly, then x won /
    -- reached in decimal (the quotient carries 18 digits below the cent: DataFusion divides decimals
    -- to 6 digits, so the numerator is scaled by 10^12 first and the sum scaled back exactly)
    SELECT month, COUNT(*) AS deals, COALESCE(SUM(amount), 0) AS amount,
           CASE WHEN reached > 0
                THEN CAST(COALESCE(SUM(amount), 0) AS DECIMAL(38, 2)) * CAST(won AS DECIMAL(20, 0))
                     * CAST(1000000000000 AS DECIMAL(38, 0)) / CAST(reached AS DECIMAL(20, 0)) END AS weighted_e12
    FROM open_deals
    GROUP BY month, won, reached
)
SELECT month,
       SUM(deals) AS deals,
       COALESCE(SUM(amount), 0) AS amount,
       CAST(ROUND(COALESCE(SUM(weighted_e12), 0) * CAST(0.000000000001 AS DECIMAL(38, 12)), 2)
            AS DECIMAL(18, 2)) AS weighted_amount,
       SUM(CASE WHEN weighted_e12 IS NULL THEN deals ELSE 0 END) AS unforecast_deals,
       COALESCE(SUM(CASE WHEN weighted_e12 IS NULL THEN amount END), 0) AS unforecast_amount
FROM by_p
GROUP BY month
ORDER BY month NULLS LAST
