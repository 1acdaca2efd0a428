-- The demo CRM in MySQL/MariaDB as a Bitrix24-style CRM keeps it: ENUMs, DECIMAL money in roubles,
-- DATE, and every time a DATETIME in the company's wall-clock time (Moscow). Copied by
-- `demo::copy_to_server`.
CREATE TABLE users (
  id BIGINT PRIMARY KEY, full_name TEXT NOT NULL, email VARCHAR(254), job_title TEXT, department TEXT,
  hired_on DATE, fired_on DATE, successor_user_id INTEGER, modified_at DATETIME);
CREATE TABLE contacts (
  id BIGINT PRIMARY KEY, contact_type ENUM('person', 'company'), display_name TEXT, phone VARCHAR(40), email VARCHAR(254),
  city TEXT, country_code VARCHAR(8), industry TEXT, lead_source TEXT, responsible_user_id INTEGER,
  created_at DATETIME, pd_consent_at DATETIME, modified_at DATETIME);
CREATE TABLE funnels (id INTEGER PRIMARY KEY, title TEXT NOT NULL);
CREATE TABLE funnel_statuses (
  id INTEGER PRIMARY KEY, funnel_id INTEGER NOT NULL, title TEXT NOT NULL, sort SMALLINT NOT NULL,
  status_type SMALLINT NOT NULL);
CREATE TABLE leads (
  id BIGINT PRIMARY KEY, contact_id BIGINT, responsible_user_id INTEGER, funnel_id INTEGER, status_id INTEGER,
  price NUMERIC(14, 2), product TEXT, created_at DATETIME, closed_at DATETIME, closed_by_user_id INTEGER,
  expected_close_on DATE, loss_reason TEXT, modified_at DATETIME);
CREATE TABLE lead_status_log (
  id BIGINT PRIMARY KEY, lead_id BIGINT, old_status_id INTEGER, new_status_id INTEGER, changed_at DATETIME,
  user_id INTEGER);
CREATE TABLE calls (
  id BIGINT PRIMARY KEY, contact_id BIGINT, lead_id BIGINT, user_id INTEGER, direction ENUM('in', 'out'),
  started_at DATETIME, duration_sec INTEGER, result TEXT, note TEXT, modified_at DATETIME);
CREATE TABLE emails (
  id BIGINT PRIMARY KEY, contact_id BIGINT, lead_id BIGINT, user_id INTEGER, direction ENUM('in', 'out'),
  sent_at DATETIME, subject TEXT, modified_at DATETIME);
CREATE TABLE chat_messages (
  id BIGINT PRIMARY KEY, contact_id BIGINT, lead_id BIGINT, user_id INTEGER, direction ENUM('in', 'out'),
  sent_at DATETIME, messenger TEXT, body TEXT, modified_at DATETIME);
CREATE TABLE meetings (
  id BIGINT PRIMARY KEY, contact_id BIGINT, lead_id BIGINT, user_id INTEGER, held_at DATETIME,
  duration_min INTEGER, summary TEXT, modified_at DATETIME);
CREATE TABLE todo (
  id BIGINT PRIMARY KEY, assignee_id INTEGER, contact_id BIGINT, lead_id BIGINT, todo_type TEXT,
  created_at DATETIME, deadline_at DATETIME, done_at DATETIME, modified_at DATETIME);
CREATE TABLE invoices (
  id BIGINT PRIMARY KEY, contact_id BIGINT, lead_id BIGINT, total NUMERIC(14, 2), status ENUM('issued', 'paid', 'cancelled'),
  issued_at DATETIME, paid_at DATETIME, modified_at DATETIME);
CREATE TABLE responsible_log (
  id BIGINT PRIMARY KEY, contact_id BIGINT, old_user_id INTEGER, new_user_id INTEGER, changed_at DATETIME,
  reason TEXT);
CREATE TABLE sales_plan (id INTEGER PRIMARY KEY, month DATE, user_id INTEGER, plan_kopecks BIGINT);
CREATE TABLE ad_budget (id INTEGER PRIMARY KEY, month DATE, channel TEXT, spent_kopecks BIGINT);
