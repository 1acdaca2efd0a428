//! Kartoteka's web app: login, dashboards, SQL console, admin and audit pages. It arrives with the
//! web-server and dashboard steps of the roadmap; this crate holds its place in the workspace so the
//! dependency direction (dashboards → reports → queries → engine) is fixed from the start.
