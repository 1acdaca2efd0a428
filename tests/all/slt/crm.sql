-- A tiny CRM, as rows of the demo CRM's own schema (ingest/src/demo/schema.sql, which the runner
-- creates first), small enough to work every metric out by hand.
-- The expected values in the .slt files beside this file were computed on paper from these rows;
-- each file says how. Times are UTC.
INSERT INTO users VALUES
  (1, 'Olga', 'olga@example.org', 'owner', 'A', '2020-01-01', NULL, NULL, NULL),
  (2, 'Anna', 'anna@example.org', 'manager', 'A', '2023-01-01', NULL, NULL, NULL),
  (3, 'Boris', 'boris@example.org', 'manager', 'A', '2023-01-01', NULL, NULL, NULL),
  (4, 'Vera', 'vera@example.org', 'team_lead', 'A', '2023-01-01', NULL, NULL, NULL);

-- c4 moved from Anna (2) to Boris (3) on 2024-02-20 (responsible_log below); its owner now is 3.
INSERT INTO contacts VALUES
  (1, 'person', 'C1', '+7 900 000-00-01', NULL, 'Moscow', 'RU', 'retail', 'ads', 2, '2024-01-05 10:00:00', '2024-01-05 10:00:00', NULL),
  (2, 'company', 'C2', NULL, '', 'Moscow', 'RU', 'retail', 'web', 2, '2024-01-20 10:00:00', NULL, NULL),
  (3, 'person', 'C3', '+7 900 000-00-03', NULL, 'Kazan', 'RU', 'retail', 'ads', 3, '2024-02-10 10:00:00', NULL, NULL),
  (4, 'person', 'C4', NULL, 'c4@example.org', 'Kazan', 'RU', NULL, NULL, 3, '2024-02-15 10:00:00', NULL, NULL);

INSERT INTO funnels VALUES (1, 'Sales');
INSERT INTO funnel_statuses VALUES
  (10, 1, 'New', 1, 0), (11, 1, 'Qualified', 2, 0), (12, 1, 'Proposal', 3, 0), (13, 1, 'Won', 4, 1), (14, 1, 'Lost', 5, 2);

-- d1..d3 won (1000, 3000, 2000 RUB; cycles 10, 20, 30 days), d4 and d5 lost for 'price' (500 RUB, no
-- amount), d6..d8 open (Proposal 4000 expected 2024-04-15, Qualified 1000 no date, New no amount).
INSERT INTO leads VALUES
  (1, 1, 2, 1, 13, 100000, 'x', '2024-01-10 00:00:00', '2024-01-20 00:00:00', 2, NULL, NULL, NULL),
  (2, 2, 2, 1, 13, 300000, 'x', '2024-01-25 00:00:00', '2024-02-14 00:00:00', 2, NULL, NULL, NULL),
  (3, 3, 3, 1, 13, 200000, 'x', '2024-02-11 00:00:00', '2024-03-12 00:00:00', 3, NULL, NULL, NULL),
  (4, 3, 3, 1, 14, 50000, 'x', '2024-02-12 00:00:00', '2024-02-20 00:00:00', 3, NULL, 'price', NULL),
  (5, 4, 3, 1, 14, NULL, 'x', '2024-02-16 00:00:00', '2024-03-01 00:00:00', 3, NULL, 'price', NULL),
  (6, 4, 3, 1, 12, 400000, 'x', '2024-03-01 00:00:00', NULL, NULL, '2024-04-15', NULL, NULL),
  (7, 1, 2, 1, 11, 100000, 'x', '2024-03-05 00:00:00', NULL, NULL, NULL, NULL, NULL),
  (8, 2, 2, 1, 10, NULL, 'x', '2024-03-10 00:00:00', NULL, NULL, NULL, NULL, NULL);

INSERT INTO lead_status_log VALUES
  (1, 1, NULL, 10, '2024-01-10 00:00:00', 2), (2, 1, 10, 11, '2024-01-12 00:00:00', 2), (3, 1, 11, 13, '2024-01-20 00:00:00', 2),
  (4, 2, NULL, 10, '2024-01-25 00:00:00', 2), (5, 2, 10, 13, '2024-02-14 00:00:00', 2),
  (6, 3, NULL, 10, '2024-02-11 00:00:00', 3), (7, 3, 10, 12, '2024-02-21 00:00:00', 3), (8, 3, 12, 13, '2024-03-12 00:00:00', 3),
  (9, 4, NULL, 10, '2024-02-12 00:00:00', 3), (10, 4, 10, 14, '2024-02-20 00:00:00', 3),
  (11, 5, NULL, 10, '2024-02-16 00:00:00', 3), (12, 5, 10, 11, '2024-02-18 00:00:00', 3), (13, 5, 11, 14, '2024-03-01 00:00:00', 3),
  (14, 6, NULL, 10, '2024-03-01 00:00:00', 3), (15, 6, 10, 12, '2024-03-03 00:00:00', 3),
  (16, 7, NULL, 10, '2024-03-05 00:00:00', 2), (17, 7, 10, 11, '2024-03-06 00:00:00', 2),
  (18, 8, NULL, 10, '2024-03-10 00:00:00', 2);

INSERT INTO calls VALUES
  (1, 1, 1, 2, 'out', '2024-01-05 10:30:00', 120, 'answered', 'n', NULL),
  (2, 3, 3, 3, 'out', '2024-02-11 12:00:00', 300, 'answered', 'n', NULL),
  (3, 2, 8, 2, 'out', '2024-03-20 09:00:00', 60, NULL, 'n', NULL),
  (4, 4, 5, 3, 'in', '2024-02-17 09:00:00', 180, 'answered', 'n', NULL);
INSERT INTO emails VALUES
  (1, 1, NULL, 2, 'in', '2024-01-06 09:00:00', 's', NULL),
  (2, 1, NULL, 2, 'out', '2024-01-06 10:00:00', 's', NULL),
  (3, 3, NULL, 3, 'in', '2024-02-12 08:00:00', 's', NULL),
  (4, 3, NULL, 4, 'out', '2024-02-12 12:00:00', 's', NULL),
  (5, 2, NULL, 2, 'in', '2024-03-01 10:00:00', 's', NULL);
INSERT INTO chat_messages VALUES
  (1, 4, NULL, 3, 'in', '2024-02-16 10:00:00', 'tg', 'b', NULL),
  (2, 4, NULL, 3, 'out', '2024-02-16 10:30:00', 'tg', 'b', NULL);
INSERT INTO meetings VALUES (1, 3, 3, 3, '2024-02-20 15:00:00', 60, 'm', NULL);

INSERT INTO todo VALUES
  (1, 2, 1, NULL, 'call', '2024-01-01 00:00:00', '2024-02-01 00:00:00', '2024-01-31 00:00:00', NULL),
  (2, 2, 1, NULL, 'call', '2024-01-01 00:00:00', '2024-02-10 00:00:00', '2024-02-10 00:00:00', NULL),
  (3, 2, 2, NULL, 'call', '2024-01-01 00:00:00', '2024-03-01 00:00:00', '2024-03-05 00:00:00', NULL),
  (4, 3, 3, NULL, 'call', '2024-01-01 00:00:00', '2024-03-10 00:00:00', NULL, NULL),
  (5, 3, 4, NULL, 'call', '2024-01-01 00:00:00', '2024-05-01 00:00:00', NULL, NULL);

INSERT INTO invoices VALUES
  (1, 1, 1, 100000, 'paid', '2024-01-20 00:00:00', '2024-01-20 12:00:00', NULL),
  (2, 2, 2, 300000, 'paid', '2024-02-14 00:00:00', '2024-02-14 12:00:00', NULL),
  (3, 1, NULL, 50000, 'paid', '2024-02-10 00:00:00', '2024-02-10 12:00:00', NULL),
  (4, 3, 3, 200000, 'paid', '2024-03-12 00:00:00', '2024-03-12 12:00:00', NULL),
  (5, 1, NULL, 50000, 'paid', '2024-03-15 00:00:00', '2024-03-15 12:00:00', NULL),
  (6, 2, NULL, 10000, 'issued', '2024-03-20 00:00:00', NULL, NULL);

INSERT INTO responsible_log VALUES (1, 4, 2, 3, '2024-02-20 09:00:00', 'handover');
INSERT INTO sales_plan VALUES
  (1, '2024-01', NULL, 200000), (2, '2024-01', 2, 100000), (3, '2024-02', NULL, 0), (4, '2024-03', 3, 400000);
INSERT INTO ad_budget VALUES (1, '2024-01', 'ads', 50000), (2, '2024-02', 'web', 100000);
