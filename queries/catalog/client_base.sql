-- name = "client_base"
-- title = "Client base"
-- title_ru = "Клиентская база"
-- description_ru = "Все клиенты на сейчас, посчитанные по каждому измерению отдельно: тип, отрасль, город, страна, источник ('unknown' для NULL). Столбцы: измерение, значение, клиентов."
-- family = "audience"
-- description = """
-- All clients now, counted along each dimension on its own: kind, industry, city, country, source
-- ('unknown' for NULL). Columns: dimension, value, clients."""
-- roles = ["owner", "team_lead", "manager", "analyst"]
-- chart = { kind = "table", x = "value", y = ["clients"], series = "dimension" }
--
-- [[columns]]
-- name = "dimension"
-- [[columns]]
-- name = "value"
-- [[columns]]
-- name = "clients"
-- unit = "clients"
SELECT dimension, value, clients FROM (
    SELECT 'kind' AS dimension, 1 AS ord, COALESCE(kind, 'unknown') AS value, COUNT(*) AS clients FROM clients GROUP BY 3
    UNION ALL
    SELECT 'industry', 2, COALESCE(industry, 'unknown'), COUNT(*) FROM clients GROUP BY 3
    UNION ALL
    SELECT 'city', 3, COALESCE(city, 'unknown'), COUNT(*) FROM clients GROUP BY 3
    UNION ALL
    SELECT 'country', 4, COALESCE(country, 'unknown'), COUNT(*) FROM clients GROUP BY 3
    UNION ALL
    SELECT 'source', 5, COALESCE(source, 'unknown'), COUNT(*) FROM clients GROUP BY 3
)
ORDER BY ord, clients DESC, value
