-- The demo CRM in PostgreSQL, with the types a real CRM on PostgreSQL uses: enums, NUMERIC money in
-- roubles, dates, instants (TIMESTAMPTZ) and one wall-clock time without zone (leads.closed_at,
-- TIMESTAMP in Moscow time). The data is the SQLite demo's, copied by `demo::copy_to_server`.
CREATE TYPE contact_kind AS ENUM ('person', 'company');
CREATE TYPE msg_direction AS ENUM ('in', 'out');
CREATE TYPE invoice_status AS ENUM ('issued', 'paid', 'cancelled');
CREATE TABLE users (
  id BIGINT PRIMARY KEY, full_name TEXT NOT NULL, email VARCHAR(254), job_title TEXT, department TEXT,
  hired_on DATE, fired_on DATE, successor_user_id INTEGER, modified_at TIMESTAMPTZ);
CREATE TABLE contacts (
  id BIGINT PRIMARY KEY, contact_type contact_kind, display_name TEXT, phone VARCHAR(40), email VARCHAR(254),
  city TEXT, country_code VARCHAR(8), industry TEXT, lead_source TEXT, responsible_user_id INTEGER,
  created_at TIMESTAMPTZ, pd_consent_at TIMESTAMPTZ, modified_at TIMESTAMPTZ);
CREATE TABLE funnels (id INTEGER PRIMARY KEY, title TEXT NOT NULL);
CREATE TABLE funnel_statuses (
  id INTEGER PRIMARY KEY, funnel_id INTEGER NOT NULL, title TEXT NOT NULL, sort SMALLINT NOT NULL,
  status_type SMALLINT NOT NULL);
CREATE TABLE leads (
  id BIGINT PRIMARY KEY, contact_id BIGINT, responsible_user_id INTEGER, funnel_id INTEGER, status_id INTEGER,
  price NUMERIC(14, 2), product TEXT, created_at TIMESTAMPTZ, closed_at TIMESTAMP, closed_by_user_id INTEGER,
  expected_close_on DATE, loss_reason TEXT, modified_at TIMESTAMPTZ);
CREATE TABLE lead_status_log (
  id BIGINT PRIMARY KEY, lead_id BIGINT, old_status_id INTEGER, new_status_id INTEGER, changed_at TIMESTAMPTZ,
  user_id INTEGER);
CREATE TABLE calls (
  id BIGINT PRIMARY KEY, contact_id BIGINT, lead_id BIGINT, user_id INTEGER, direction msg_direction,
  started_at TIMESTAMPTZ, duration_sec INTEGER, result TEXT, note TEXT, modified_at TIMESTAMPTZ);
CREATE TABLE emails (
  id BIGINT PRIMARY KEY, contact_id BIGINT, lead_id BIGINT, user_id INTEGER, direction msg_direction,
  sent_at TIMESTAMPTZ, subject TEXT, modified_at TIMESTAMPTZ);
CREATE TABLE chat_messages (
  id BIGINT PRIMARY KEY, contact_id BIGINT, lead_id BIGINT, user_id INTEGER, direction msg_direction,
  sent_at TIMESTAMPTZ, messenger TEXT, body TEXT, modified_at TIMESTAMPTZ);
CREATE TABLE meetings (
  id BIGINT PRIMARY KEY, contact_id BIGINT, lead_id BIGINT, user_id INTEGER, held_at TIMESTAMPTZ,
  duration_min INTEGER, summary TEXT, modified_at TIMESTAMPTZ);
CREATE TABLE todo (
  id BIGINT PRIMARY KEY, assignee_id INTEGER, contact_id BIGINT, lead_id BIGINT, todo_type TEXT,
  created_at TIMESTAMPTZ, deadline_at TIMESTAMPTZ, done_at TIMESTAMPTZ, modified_at TIMESTAMPTZ);
CREATE TABLE invoices (
  id BIGINT PRIMARY KEY, contact_id BIGINT, lead_id BIGINT, total NUMERIC(14, 2), status invoice_status,
  issued_at TIMESTAMPTZ, paid_at TIMESTAMPTZ, modified_at TIMESTAMPTZ);
CREATE TABLE responsible_log (
  id BIGINT PRIMARY KEY, contact_id BIGINT, old_user_id INTEGER, new_user_id INTEGER, changed_at TIMESTAMPTZ,
  reason TEXT);
CREATE TABLE sales_plan (id INTEGER PRIMARY KEY, month DATE, user_id INTEGER, plan_kopecks BIGINT);
CREATE TABLE ad_budget (id INTEGER PRIMARY KEY, month DATE, channel TEXT, spent_kopecks BIGINT);
