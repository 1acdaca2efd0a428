//! The report archive: every rendered copy's files, sealed with AES-256-GCM under a key derived from
//! the lake's keys (at rest like the lake; the path is the associated data, so a file moved to another
//! run or recipient no longer opens), and a row per copy in the control plane (report, recipient,
//! trigger, snapshot, parameters, content hash, timing, outcome). The dashboard shows each recipient's
//! newest copy; `prune` forgets copies older than the retention period except that newest one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use kartoteka_engine::Lake;
use kartoteka_engine::control::RunOutcome;
use kartoteka_engine::control::{ControlPlane, ReportRun};

use crate::render::Rendered;
use crate::{Error, Result};

/// The archive under a directory of the home.
#[derive(Debug, Clone)]
pub struct Archive {
    root: PathBuf,
    lake: Arc<Lake>,
    control: Arc<ControlPlane>,
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Archive(format!("{}: {e}", path.display()))
}

/// A path component from a login or id: letters, digits, `.`, `-`, `_` kept, the rest `_`.
fn component(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Archive {
    /// The archive rooted at `root`.
    pub fn new(root: PathBuf, lake: Arc<Lake>, control: Arc<ControlPlane>) -> Archive {
        Archive {
            root,
            lake,
            control,
        }
    }

    /// Seal and store `rendered`'s files and record the copy.
    pub async fn store(
        &self,
        rendered: &Rendered,
        trigger: &str,
        started_at: DateTime<Utc>,
    ) -> Result<ReportRun> {
        let run_dir = format!(
            "{}/{}-{}/{}",
            component(&rendered.report),
            started_at.format("%Y%m%dT%H%M%SZ"),
            &uuid::Uuid::new_v4().simple().to_string()[..8],
            component(&rendered.recipient)
        );
        let dir = self.root.join(&run_dir);
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        restrict(&self.root);
        let mut files = Vec::new();
        for (i, panel) in rendered.panels.iter().enumerate() {
            for (format, bytes) in &panel.files {
                let rel = format!("{run_dir}/{}", rendered.file_name(i, *format));
                let sealed = self.lake.seal_blob(rel.as_bytes(), bytes).await;
                write_private(&self.root.join(&rel), &sealed)?;
                files.push(rel);
            }
        }
        let mut run = ReportRun {
            id: 0,
            report: rendered.report.clone(),
            recipient: rendered.recipient.clone(),
            trigger: trigger.into(),
            started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            ended_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            outcome: RunOutcome::Ok,
            snapshot_id: Some(rendered.snapshot_id as i64),
            params: rendered.params_json(),
            content_hash: Some(rendered.content_hash.clone()),
            files,
            error: None,
            seconds: rendered.seconds,
        };
        run.id = self
            .control
            .add_report_run(&run)
            .await
            .map_err(|e| Error::Archive(e.to_string()))?;
        Ok(run)
    }

    /// Record a copy that could not be rendered.
    pub async fn record_failure(
        &self,
        report: &str,
        recipient: &str,
        trigger: &str,
        started_at: DateTime<Utc>,
        error: &str,
    ) -> Result<ReportRun> {
        let mut run = ReportRun {
            id: 0,
            report: report.into(),
            recipient: recipient.into(),
            trigger: trigger.into(),
            started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            ended_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            outcome: RunOutcome::Failed,
            snapshot_id: None,
            params: serde_json::Value::Null,
            content_hash: None,
            files: Vec::new(),
            error: Some(error.into()),
            seconds: (Utc::now() - started_at).num_milliseconds() as f64 / 1000.0,
        };
        run.id = self
            .control
            .add_report_run(&run)
            .await
            .map_err(|e| Error::Archive(e.to_string()))?;
        Ok(run)
    }

    /// The plaintext of an archived file (one of a run's `files`).
    pub async fn read(&self, file: &str) -> Result<Vec<u8>> {
        if file.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(Error::Archive(format!("{file:?} is not an archive path")));
        }
        let path = self.root.join(file);
        let sealed = std::fs::read(&path).map_err(|e| io(&path, e))?;
        self.lake
            .open_blob(file.as_bytes(), &sealed)
            .await
            .map(|p| p.to_vec())
            .ok_or_else(|| {
                Error::Archive(format!(
                    "{file}: does not open under this lake's keys (altered, moved, or from another lake)"
                ))
            })
    }

    /// The newest successful copy of `report` for `recipient`: what the dashboard shows them.
    pub async fn latest(&self, report: &str, recipient: &str) -> Result<Option<ReportRun>> {
        let runs = self
            .control
            .report_runs(Some(report), Some(recipient), 50)
            .await
            .map_err(|e| Error::Archive(e.to_string()))?;
        Ok(runs.into_iter().find(|r| r.outcome == RunOutcome::Ok))
    }

    /// Forget copies rendered more than `keep` ago (each recipient's newest copy stays) and delete
    /// their files. Returns how many copies were forgotten.
    pub async fn prune(&self, keep: chrono::Duration) -> Result<usize> {
        let gone = self
            .control
            .prune_report_runs(Utc::now() - keep)
            .await
            .map_err(|e| Error::Archive(e.to_string()))?;
        self.delete_files(&gone)?;
        Ok(gone.len())
    }

    /// Delete every copy rendered from a snapshot older than `snapshot` (after an erasure, which
    /// expires those snapshots too). Returns how many copies were deleted.
    pub async fn purge_before_snapshot(&self, snapshot: u64) -> Result<usize> {
        let gone = self
            .control
            .take_report_runs_before_snapshot(snapshot)
            .await
            .map_err(|e| Error::Archive(e.to_string()))?;
        self.delete_files(&gone)?;
        Ok(gone.len())
    }

    fn delete_files(&self, runs: &[ReportRun]) -> Result<()> {
        for run in runs {
            for file in &run.files {
                let path = self.root.join(file);
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(&path, e)),
                }
                // The run's directories go when they are empty.
                let mut dir = path.parent();
                while let Some(d) = dir.filter(|d| *d != self.root) {
                    if std::fs::remove_dir(d).is_err() {
                        break;
                    }
                    dir = d.parent();
                }
            }
        }
        Ok(())
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| io(&tmp, e))?;
    f.sync_all().map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

/// Only the owner may list the archive.
fn restrict(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart::{Chart, ChartData};
    use crate::render::RenderedPanel;
    use crate::spec::{ChartKind, Format, Panel};
    use kartoteka_engine::{LakeStore, MasterKeySource};

    fn rendered(recipient: &str, svg: &str) -> Rendered {
        let panel = Panel {
            title: "Выручка".into(),
            metric: "revenue_by_month".into(),
            params: vec![("from".into(), "2025-01-01".into())],
            chart: ChartKind::Kpi,
            x: "month".into(),
            y: vec!["revenue".into()],
            series: None,
            unit: "RUB".into(),
            column_units: Default::default(),
            english: false,
        };
        Rendered {
            report: "weekly".into(),
            title: "Неделя".into(),
            recipient: recipient.into(),
            snapshot_id: 7,
            panels: vec![RenderedPanel {
                chart: Chart {
                    kind: ChartKind::Kpi,
                    title: "Выручка".into(),
                    x_caption: String::new(),
                    y_caption: String::new(),
                    unit: "RUB".into(),
                    data: ChartData::Kpi {
                        value: Some(1.0),
                        previous: None,
                    },
                    english: false,
                },
                panel,
                rows: 1,
                result: crate::render::no_answer(),
                files: vec![(Format::Svg, svg.as_bytes().to_vec())],
            }],
            content_hash: "ab".repeat(32),
            seconds: 0.5,
        }
    }

    async fn archive(dir: &Path) -> (Archive, Arc<ControlPlane>) {
        let store = LakeStore::local(&dir.join("lake")).expect("store");
        let key = MasterKeySource::create_key_file(&dir.join("master.key")).expect("key");
        let lake = Arc::new(Lake::open_or_create(store, &key).await.expect("lake"));
        let control = Arc::new(
            ControlPlane::open(&dir.join("control.sqlite"), None)
                .await
                .expect("control"),
        );
        (
            Archive::new(dir.join("archive"), lake, control.clone()),
            control,
        )
    }

    #[tokio::test]
    async fn copies_are_sealed_bound_to_their_place_and_pruned_to_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (archive, control) = archive(dir.path()).await;
        let secret_svg = "<svg>Анна Петрова 1 500 000 ₽</svg>";
        let started = Utc::now() - chrono::Duration::days(200);
        let old = archive
            .store(&rendered("ann", secret_svg), "schedule", started)
            .await
            .expect("stored");
        assert_eq!(old.files.len(), 1);
        let on_disk = std::fs::read(dir.path().join("archive").join(&old.files[0])).expect("file");
        assert!(
            !on_disk.windows(5).any(|w| w == b"<svg>")
                && !String::from_utf8_lossy(&on_disk).contains("Анна"),
            "sealed at rest"
        );
        assert_eq!(
            archive.read(&old.files[0]).await.expect("opens"),
            secret_svg.as_bytes()
        );

        // One flipped bit, or the file moved to another recipient's place: it no longer opens.
        let path = dir.path().join("archive").join(&old.files[0]);
        let mut tampered = on_disk.clone();
        tampered[20] ^= 1;
        std::fs::write(&path, &tampered).expect("write");
        let e = archive
            .read(&old.files[0])
            .await
            .expect_err("tampered")
            .to_string();
        assert!(e.contains("does not open"), "{e}");
        std::fs::write(&path, &on_disk).expect("restore");
        let other = archive
            .store(&rendered("bob", "<svg>bob</svg>"), "manual", Utc::now())
            .await
            .expect("stored");
        std::fs::copy(&path, dir.path().join("archive").join(&other.files[0])).expect("copy");
        assert!(archive.read(&other.files[0]).await.is_err(), "moved copy");
        assert!(
            archive.read("../master.key").await.is_err(),
            "no way out of the archive"
        );

        // Retention: ann's old copy is her newest, so it stays until a newer one exists.
        assert_eq!(
            archive
                .prune(chrono::Duration::days(90))
                .await
                .expect("prune"),
            0
        );
        let newer = archive
            .store(&rendered("ann", "<svg>new</svg>"), "schedule", Utc::now())
            .await
            .expect("stored");
        assert_eq!(
            archive
                .prune(chrono::Duration::days(90))
                .await
                .expect("prune"),
            1
        );
        assert!(!path.exists(), "the pruned copy's file is deleted");
        let latest = archive
            .latest("weekly", "ann")
            .await
            .expect("latest")
            .expect("one");
        assert_eq!(latest.id, newer.id);
        assert_eq!(latest.snapshot_id, Some(7));
        assert_eq!(latest.params[0]["metric"], "revenue_by_month");
        let all = control
            .report_runs(Some("weekly"), None, 10)
            .await
            .expect("runs");
        assert_eq!(all.len(), 2);
    }
}
