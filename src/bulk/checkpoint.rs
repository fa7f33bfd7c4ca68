//! The checkpoint of a bulk run: a small JSON file beside the input (or at `--checkpoint`) holding the input's
//! hash, the group size, the job-id prefix and the last confirmed line; read by `--resume`, written atomically
//! (temp file + rename), and the decision of where a run starts.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Appended to the input's path for the default checkpoint path (`bans.csv` -> `bans.csv.kickq-checkpoint`).
pub(crate) const CHECKPOINT_SUFFIX: &str = ".kickq-checkpoint";
/// The `version` this build writes and reads: a later layout is refused, not misread.
pub(crate) const CHECKPOINT_VERSION: u32 = 1;

/// What a checkpoint holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    /// [`CHECKPOINT_VERSION`].
    pub version: u32,
    /// Hex MD5 of the whole input (see `load::input_hash`).
    pub input_md5: String,
    /// `--group-size` of the run: grouping, so the messages, depend on it.
    pub group_size: u64,
    /// The job-id prefix: a resumed run must derive the same job ids.
    pub job_id_prefix: String,
    /// Lines in the input.
    pub lines: u64,
    /// Every line up to this one is in a confirmed message.
    pub confirmed_through: u64,
    /// The run confirmed every message.
    pub complete: bool,
}

impl Checkpoint {
    /// The line a resumed run starts from (`--resume-from`).
    pub(crate) fn resume_from(&self) -> u64 {
        self.confirmed_through + 1
    }
}

/// Why a checkpoint cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckpointError {
    /// Reading or writing it failed.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The checkpoint's path.
        path: PathBuf,
        /// The file system's error.
        source: std::io::Error,
    },
    /// Its content is not a checkpoint of this version.
    #[error("checkpoint {path} is not a kickq checkpoint (version {CHECKPOINT_VERSION}): {why}")]
    Corrupt {
        /// The checkpoint's path.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// `--resume` without a checkpoint.
    #[error("--resume: there is no checkpoint at {0}; nothing to resume (run without --resume to start)")]
    Missing(PathBuf),
    /// `--resume` of another input.
    #[error(
        "--resume: the input changed since the checkpoint at {0} was written (its hash differs); \
         nothing was published (delete the checkpoint to start over)"
    )]
    InputChanged(PathBuf),
    /// `--resume` with another `--group-size`.
    #[error(
        "--resume: the checkpoint at {path} was written with --group-size {was}, not {now}; \
         resume with --group-size {was}"
    )]
    GroupSizeChanged {
        /// The checkpoint's path.
        path: PathBuf,
        /// Its group size.
        was: u64,
        /// This run's.
        now: u64,
    },
    /// `--resume` with another job-id prefix.
    #[error(
        "--resume: the checkpoint at {path} was written with --job-id-prefix {was:?}, not {now:?}; \
         resume with the same prefix"
    )]
    PrefixChanged {
        /// The checkpoint's path.
        path: PathBuf,
        /// Its prefix.
        was: String,
        /// This run's.
        now: String,
    },
    /// A plain run of an input whose last run was interrupted.
    #[error(
        "the checkpoint at {path} says an earlier run of this input stopped after line {through}; \
         nothing was published: pass --resume to continue it from line {next} (its job ids, so nobody is \
         kicked twice), or --new-run to send the whole input again as a new run (new job ids)"
    )]
    Unfinished {
        /// The checkpoint's path.
        path: PathBuf,
        /// Its confirmed line.
        through: u64,
        /// The line a resume starts from.
        next: u64,
    },
}

/// The default checkpoint path of an input file.
pub(crate) fn beside(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(CHECKPOINT_SUFFIX);
    PathBuf::from(name)
}

/// Where a run starts (`--resume-from` line, 1 for the whole input), given
/// the checkpoint found at `path`, this run's own checkpoint fields `now`,
/// and whether `--resume` or `--new-run` was given. Refuses a resume that
/// would not derive the same messages, and a plain run over an unfinished
/// one (`--new-run` says that a new run is meant).
pub(crate) fn start_line(
    found: Option<&Checkpoint>,
    now: &Checkpoint,
    resume: bool,
    new_run: bool,
    path: &Path,
) -> Result<u64, CheckpointError> {
    let path = path.to_path_buf();
    match (found, resume) {
        (_, false) if new_run => Ok(1),
        (None, true) => Err(CheckpointError::Missing(path)),
        (Some(cp), true) => {
            if cp.input_md5 != now.input_md5 {
                Err(CheckpointError::InputChanged(path))
            } else if cp.group_size != now.group_size {
                Err(CheckpointError::GroupSizeChanged {
                    path,
                    was: cp.group_size,
                    now: now.group_size,
                })
            } else if cp.job_id_prefix != now.job_id_prefix {
                Err(CheckpointError::PrefixChanged {
                    path,
                    was: cp.job_id_prefix.clone(),
                    now: now.job_id_prefix.clone(),
                })
            } else {
                Ok(cp.resume_from())
            }
        }
        (Some(cp), false) if !cp.complete && cp.input_md5 == now.input_md5 => Err(CheckpointError::Unfinished {
            path,
            through: cp.confirmed_through,
            next: cp.resume_from(),
        }),
        _ => Ok(1),
    }
}

/// Reads the checkpoint at `path`, `None` if there is none.
pub(crate) fn read(path: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CheckpointError::Io {
                path: path.into(),
                source,
            })
        }
    };
    let corrupt = |why: String| CheckpointError::Corrupt { path: path.into(), why };
    let cp: Checkpoint = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if cp.version != CHECKPOINT_VERSION {
        return Err(corrupt(format!("version {}", cp.version)));
    }
    Ok(Some(cp))
}

/// Writes `cp` to `path` atomically: a temp file beside it, synced, then renamed over it.
pub(crate) fn write(path: &Path, cp: &Checkpoint) -> Result<(), CheckpointError> {
    let io = |source| CheckpointError::Io {
        path: path.into(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut body = serde_json::to_vec_pretty(cp).expect("a checkpoint serializes");
    body.push(b'\n');
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&body).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

/// Least time between two checkpoint writes while confirms come in: one
/// atomic write a second costs nothing next to the publishing, and a kill -9
/// then resends at most a second of messages (with the same job ids). The
/// last write, at the end or on Ctrl-C, is exact.
pub(crate) const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// The checkpoint a run keeps: where, and its fields as of the last confirm.
pub(crate) struct Keeper {
    /// Where the checkpoint is written.
    pub(crate) path: PathBuf,
    /// Its fields as of the last confirm.
    pub(crate) cp: Checkpoint,
    /// When it was last written.
    pub(crate) last_write: Instant,
}

impl Keeper {
    /// Writes it through `through`, `complete` once the whole input is confirmed.
    pub(crate) fn save(&mut self, through: u64, complete: bool) -> Result<(), CheckpointError> {
        self.cp.confirmed_through = through;
        self.cp.complete = complete;
        self.last_write = Instant::now();
        write(&self.path, &self.cp)
    }

    /// Saves at most every [`CHECKPOINT_INTERVAL`]; a failure is a warning (the final save reports).
    pub(crate) fn tick(&mut self, through: u64) {
        if self.last_write.elapsed() >= CHECKPOINT_INTERVAL {
            if let Err(e) = self.save(through, false) {
                tracing::warn!(error = %e, "could not update the checkpoint");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(md5: &str, group_size: u64, prefix: &str, through: u64, complete: bool) -> Checkpoint {
        Checkpoint {
            version: CHECKPOINT_VERSION,
            input_md5: md5.into(),
            group_size,
            job_id_prefix: prefix.into(),
            lines: 100,
            confirmed_through: through,
            complete,
        }
    }

    #[test]
    fn start_line_by_table() {
        let now = cp("h", 100, "p", 0, false);
        let p = Path::new("f.kickq-checkpoint");
        // (found, --resume, --new-run) -> start line or the error's first words
        type Case = (Option<Checkpoint>, bool, bool, Result<u64, &'static str>);
        let table: Vec<Case> = vec![
            (None, false, false, Ok(1)),
            (None, false, true, Ok(1)),
            (None, true, false, Err("--resume: there is no checkpoint")),
            (Some(cp("h", 100, "p", 41, false)), true, false, Ok(42)),
            (Some(cp("h", 100, "p", 100, true)), true, false, Ok(101)),
            (Some(cp("other", 100, "p", 41, false)), true, false, Err("--resume: the input changed")),
            (
                Some(cp("h", 50, "p", 41, false)),
                true,
                false,
                Err("--resume: the checkpoint at f.kickq-checkpoint was written with --group-size 50, not 100"),
            ),
            (Some(cp("h", 100, "q", 41, false)), true, false, Err("--resume: the checkpoint at f.kickq-checkpoint was written with --job-id-prefix \"q\"")),
            (
                Some(cp("h", 100, "p", 41, false)),
                false,
                false,
                Err("the checkpoint at f.kickq-checkpoint says an earlier run of this input stopped after line 41; nothing was published: pass --resume to continue it from line 42 (its job ids, so nobody is kicked twice), or --new-run"),
            ),
            // --new-run starts over whatever the checkpoint says.
            (Some(cp("h", 100, "p", 41, false)), false, true, Ok(1)),
            (Some(cp("h", 100, "p", 100, true)), false, false, Ok(1)),
            (Some(cp("other", 100, "p", 41, false)), false, false, Ok(1)),
        ];
        for (found, resume, new_run, want) in table {
            let got = start_line(found.as_ref(), &now, resume, new_run, p).map_err(|e| e.to_string());
            match want {
                Ok(n) => assert_eq!(got.as_ref().ok(), Some(&n), "{found:?} {resume} {new_run}: {got:?}"),
                Err(w) => {
                    let e = got.expect_err(w);
                    assert!(e.starts_with(w), "{e} should start with {w}");
                }
            }
        }
    }

    #[test]
    fn writes_atomically_and_reads_back() {
        let dir = std::env::temp_dir().join(format!("kickq-cp-{}-{}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = beside(&dir.join("bans.csv"));
        assert!(path.ends_with("bans.csv.kickq-checkpoint"), "{path:?}");
        assert_eq!(read(&path).unwrap(), None);
        let c = cp("h", 7, "p", 12, false);
        write(&path, &c).unwrap();
        assert_eq!(read(&path).unwrap(), Some(c));
        let files = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(files, 1, "no temp file left");
        std::fs::write(&path, b"{\"version\":9}").unwrap();
        assert!(matches!(read(&path), Err(CheckpointError::Corrupt { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
