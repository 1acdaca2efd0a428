-- name = "pipeline_by_stage"
-- title = "Pipeline by stage"
-- title_ru = "Сделки по этапам"
-- description_ru = "Открытые сделки на сейчас (статус 'open'): число и сумма по этапам — каждый открытый этап каждой воронки по порядку, нули для пустых этапов."
-- family = "sales"
-- description = """
-- Open deals now (status 'open'): count and sum of amount per stage, every open stage of every pipeline
-- in position order, zeros where a stage is empty."""
-- roles = ["owner", "team_lead", "manager", "analyst"]
-- chart = { kind = "funnel", x = "stage", y = ["amount"], series = "pipeline" }
--
-- [[columns]]
-- name = "pipeline"
-- [[columns]]
-- name = "position"
-- [[columns]]
-- name = "stage"
-- [[columns]]
-- name = "deals"
-- unit = "deals"
-- [[columns]]
-- name = "amount"
-- unit = "money"
SELECT s.pipeline, s.position, s.stage,
       COUNT(d.deal_id) AS deals,
       COALESCE(SUM(d.amount), 0) AS amount
FROM pipeline_stages s
LEFT JOIN deals d ON d.pipeline = s.pipeline AND d.stage = s.stage AND d.status = 'open'
WHERE s.kind = 'open'
GROUP BY s.pipeline, s.position, s.stage
ORDER BY s.pipeline, s.position
