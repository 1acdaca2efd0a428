-- name = "funnel_conversion"
-- title = "Funnel conversion"
-- title_ru = "Конверсия воронки"
-- description_ru = "Сделки, созданные в [from, to), в одной воронке. Для каждого не проигрышного этапа по порядку: reached — сделки, вошедшие в этот этап или любой более поздний не проигрышный (по deal_stage_changes), conversion — reached этапа / reached предыдущего; NULL для первого этапа и когда предыдущего не достиг никто. Личная воронка менеджера — эта же метрика по его правам доступа."
-- family = "funnel"
-- description = """
-- Deals created in [from, to) in one pipeline. For each non-lost stage in position order, `reached` =
-- deals that entered that stage or any later non-lost stage (per deal_stage_changes), and `conversion` =
-- reached(stage) / reached(previous stage); NULL for the first stage and when the previous stage was
-- reached by nobody. A manager's personal funnel is this metric under that manager's policy."""
-- roles = ["owner", "team_lead", "manager", "analyst"]
-- chart = { kind = "funnel", x = "stage", y = ["reached"] }
--
-- [[params]]
-- name = "from"
-- type = "timestamp"
-- default = "month_start(to, -12)"
-- description = "deals created from, inclusive"
-- description_ru = "сделки, созданные начиная с этого момента (включительно)"
-- [[params]]
-- name = "to"
-- type = "timestamp"
-- default = "now"
-- description = "deals created before, exclusive"
-- description_ru = "сделки, созданные до этого момента (не включая его)"
-- [[params]]
-- name = "pipeline"
-- type = "text"
-- default = ""
-- description = "pipeline name (default: the pipeline with the most deals; ties to the first name)"
-- description_ru = "название воронки (по умолчанию — воронка с наибольшим числом сделок, при равенстве — первая по имени)"
--
-- [[columns]]
-- name = "pipeline"
-- [[columns]]
-- name = "position"
-- [[columns]]
-- name = "stage"
-- [[columns]]
-- name = "reached"
-- unit = "deals"
-- [[columns]]
-- name = "conversion"
-- unit = "ratio"
WITH chosen AS (
    SELECT CASE WHEN $pipeline = ''
                THEN (SELECT pipeline FROM deals WHERE pipeline IS NOT NULL
                      GROUP BY pipeline ORDER BY COUNT(*) DESC, pipeline LIMIT 1)
                ELSE $pipeline END AS pipeline
),
stages AS (
    SELECT s.pipeline, s.stage, s.position
    FROM pipeline_stages s JOIN chosen c ON s.pipeline = c.pipeline
    WHERE s.kind <> 'lost'
),
furthest AS (
    -- the furthest non-lost stage each deal of the period ever entered
    SELECT r.deal_id, r.max_position
    FROM deal_reach r
    JOIN chosen c ON r.pipeline = c.pipeline
    JOIN deals d ON d.deal_id = r.deal_id
    WHERE d.created_at >= $from AND d.created_at < $to
),
reached AS (
    SELECT st.pipeline, st.position, st.stage, COUNT(f.deal_id) AS reached
    FROM stages st LEFT JOIN furthest f ON f.max_position >= st.position
    GROUP BY st.pipeline, st.position, st.stage
)
SELECT pipeline, position, stage, reached,
       CAST(reached AS DOUBLE)
         / CAST(NULLIF(LAG(reached) OVER (ORDER BY position), 0) AS DOUBLE) AS conversion
FROM reached
ORDER BY position
