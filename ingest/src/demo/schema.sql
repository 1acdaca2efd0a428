-- The demo CRM's own schema: shaped like a real CRM's database, deliberately not the canonical model.
CREATE TABLE users (
  id INTEGER PRIMARY KEY, full_name TEXT NOT NULL, email TEXT, job_title TEXT, department TEXT,
  hired_on TEXT, fired_on TEXT, successor_user_id INTEGER, modified_at TEXT);
CREATE TABLE contacts (
  id INTEGER PRIMARY KEY, contact_type TEXT, display_name TEXT, phone TEXT, email TEXT, city TEXT,
  country_code TEXT, industry TEXT, lead_source TEXT, responsible_user_id INTEGER, created_at TEXT,
  pd_consent_at TEXT, modified_at TEXT);
CREATE TABLE funnels (id INTEGER PRIMARY KEY, title TEXT NOT NULL);
-- status_type: 0 = in progress, 1 = closed won, 2 = closed lost
CREATE TABLE funnel_statuses (
  id INTEGER PRIMARY KEY, funnel_id INTEGER NOT NULL, title TEXT NOT NULL, sort INTEGER NOT NULL, status_type INTEGER NOT NULL);
CREATE TABLE leads (
  id INTEGER PRIMARY KEY, contact_id INTEGER, responsible_user_id INTEGER, funnel_id INTEGER, status_id INTEGER,
  price_kopecks INTEGER, product TEXT, created_at TEXT, closed_at TEXT, closed_by_user_id INTEGER,
  expected_close_on TEXT, loss_reason TEXT, modified_at TEXT);
CREATE TABLE lead_status_log (
  id INTEGER PRIMARY KEY, lead_id INTEGER, old_status_id INTEGER, new_status_id INTEGER, changed_at TEXT, user_id INTEGER);
CREATE TABLE calls (
  id INTEGER PRIMARY KEY, contact_id INTEGER, lead_id INTEGER, user_id INTEGER, direction TEXT, started_at TEXT,
  duration_sec INTEGER, result TEXT, note TEXT, modified_at TEXT);
CREATE TABLE emails (
  id INTEGER PRIMARY KEY, contact_id INTEGER, lead_id INTEGER, user_id INTEGER, direction TEXT, sent_at TEXT, subject TEXT, modified_at TEXT);
CREATE TABLE chat_messages (
  id INTEGER PRIMARY KEY, contact_id INTEGER, lead_id INTEGER, user_id INTEGER, direction TEXT, sent_at TEXT,
  messenger TEXT, body TEXT, modified_at TEXT);
CREATE TABLE meetings (
  id INTEGER PRIMARY KEY, contact_id INTEGER, lead_id INTEGER, user_id INTEGER, held_at TEXT, duration_min INTEGER, summary TEXT,
  modified_at TEXT);
CREATE TABLE todo (
  id INTEGER PRIMARY KEY, assignee_id INTEGER, contact_id INTEGER, lead_id INTEGER, todo_type TEXT, created_at TEXT,
  deadline_at TEXT, done_at TEXT, modified_at TEXT);
-- status: 'paid', 'issued' (not paid yet) or 'cancelled'; only paid invoices are payments
CREATE TABLE invoices (
  id INTEGER PRIMARY KEY, contact_id INTEGER, lead_id INTEGER, total_kopecks INTEGER, status TEXT, issued_at TEXT,
  paid_at TEXT, modified_at TEXT);
CREATE TABLE responsible_log (
  id INTEGER PRIMARY KEY, contact_id INTEGER, old_user_id INTEGER, new_user_id INTEGER, changed_at TEXT, reason TEXT);
-- month: 'YYYY-MM'; user_id NULL = the whole company
CREATE TABLE sales_plan (id INTEGER PRIMARY KEY, month TEXT, user_id INTEGER, plan_kopecks INTEGER);
CREATE TABLE ad_budget (id INTEGER PRIMARY KEY, month TEXT, channel TEXT, spent_kopecks INTEGER);
