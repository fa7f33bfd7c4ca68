//! Bearer tokens of the HTTP intake: read from `KICKQ_HTTP_INTAKE_TOKEN_FILE` (one a line, `#` comments and blank
//! lines ignored), re-read when the file changes, and compared in constant time.
//!
//! Only SHA-256 digests of the tokens are kept. A presented token is hashed
//! and compared with every digest by `subtle::ConstantTimeEq`, all of them,
//! whatever matched: neither its length nor which token it resembles shows
//! in the time taken.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use subtle::ConstantTimeEq;

/// Which token authenticated a request (its digest): the rate cap's key,
/// never the token itself.
pub(crate) type TokenId = [u8; 32];

/// Why the token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// It could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file named by `KICKQ_HTTP_INTAKE_TOKEN_FILE`.
        path: PathBuf,
        /// The operating system's refusal.
        source: std::io::Error,
    },
    /// It holds no token (only blank lines and comments).
    #[error("{0} holds no token (one a line; blank lines and # comments are ignored)")]
    Empty(PathBuf),
}

/// The tokens of a token file's text: one a line, trimmed; blank lines and
/// lines starting with `#` skipped.
pub(crate) fn parse_tokens(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// The token of an `Authorization: Bearer <token>` header value (the
/// scheme's case ignored), if it is one.
pub(crate) fn bearer(value: Option<&[u8]>) -> Option<&[u8]> {
    let value = value?;
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

fn digest(token: &[u8]) -> TokenId {
    Sha256::digest(token).into()
}

/// The digest of `presented` if it is one of `known`: every digest is
/// compared, in constant time each.
pub(crate) fn find(known: &[TokenId], presented: &[u8]) -> Option<TokenId> {
    let d = digest(presented);
    let mut hit = subtle::Choice::from(0u8);
    for k in known {
        hit |= k.ct_eq(&d);
    }
    bool::from(hit).then_some(d)
}

/// What identifies a version of the file: modification time, size, inode
/// (a rename over it, the usual atomic rotation, changes the inode).
type Stamp = (i64, i64, u64, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.mtime(), m.mtime_nsec(), m.len(), m.ino()))
}

/// The token file, loaded; [`Tokens::check`] re-reads it when it changed.
#[derive(Debug)]
pub(crate) struct Tokens {
    path: PathBuf,
    /// Who reads the file, for the log: `http intake` or `console`.
    reader: &'static str,
    loaded: Mutex<(Option<Stamp>, Vec<TokenId>)>,
}

fn read(path: &Path) -> Result<Vec<TokenId>, TokenError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
        path: path.to_owned(),
        source,
    })?;
    let tokens: Vec<TokenId> = parse_tokens(&text).into_iter().map(|t| digest(t.as_bytes())).collect();
    if tokens.is_empty() {
        return Err(TokenError::Empty(path.to_owned()));
    }
    Ok(tokens)
}

impl Tokens {
    /// Reads the file; a missing, unreadable or empty file is an error.
    pub(crate) fn load(path: &Path) -> Result<Tokens, TokenError> {
        Self::load_for(path, "http intake")
    }

    /// [`Tokens::load`] for another reader, named in its log lines.
    pub(crate) fn load_for(path: &Path, reader: &'static str) -> Result<Tokens, TokenError> {
        let st = stamp(path);
        let tokens = read(path)?;
        Ok(Tokens {
            path: path.to_owned(),
            reader,
            loaded: Mutex::new((st, tokens)),
        })
    }

    /// Which token `presented` is, if any (the file re-read first if it
    /// changed: [`Tokens::current`]).
    pub(crate) fn check(&self, presented: &[u8]) -> Option<TokenId> {
        let loaded = self.current();
        find(&loaded.1, presented)
    }

    /// Whether the token `id` is still in the file (a console session checks
    /// the token that opened it on every request).
    pub(crate) fn still_has(&self, id: &TokenId) -> bool {
        self.current().1.iter().any(|k| k == id)
    }

    /// The tokens now. The file is re-read when it changed since the last
    /// read, and on every call while it cannot be used. A file that is gone,
    /// unreadable or holds no token revokes every token (fail closed), with
    /// an ERROR line each time it is read so: revoking a token by emptying
    /// or removing the file must never leave it working.
    fn current(&self) -> std::sync::MutexGuard<'_, (Option<Stamp>, Vec<TokenId>)> {
        let mut loaded = self.loaded.lock().expect("no panic holds the token lock");
        let now = stamp(&self.path);
        let failed = loaded.1.is_empty();
        if now != loaded.0 || failed {
            loaded.0 = now;
            match read(&self.path) {
                Ok(tokens) => {
                    tracing::info!(tokens = tokens.len(), "{}: token file re-read", self.reader);
                    loaded.1 = tokens;
                }
                Err(e) => {
                    tracing::error!(
                        "{}: every token refused until the token file can be used: {e}",
                        self.reader
                    );
                    loaded.1.clear();
                }
            }
        }
        loaded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_lines_by_table() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("a\n", &["a"]),
            ("  a  \r\n\n# old: x\nb\n", &["a", "b"]),
            ("#only\n\n   \n", &[]),
            ("a b\n", &["a b"]),
        ];
        for (text, want) in cases {
            assert_eq!(parse_tokens(text), *want, "{text:?}");
        }
    }

    #[test]
    fn bearer_headers_by_table() {
        type Case<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);
        let cases: &[Case] = &[
            (None, None),
            (Some(b"Bearer abc"), Some(b"abc")),
            (Some(b"bearer abc "), Some(b"abc")),
            (Some(b"BEARER abc"), Some(b"abc")),
            (Some(b"Bearer "), None),
            (Some(b"Basic abc"), None),
            (Some(b"Bearerabc"), None),
            (Some(b"abc"), None),
        ];
        for (header, want) in cases {
            assert_eq!(bearer(*header), *want, "{header:?}");
        }
    }

    #[test]
    fn only_known_tokens_match() {
        let known = [digest(b"t1"), digest(b"t2")];
        assert_eq!(find(&known, b"t1"), Some(digest(b"t1")));
        assert_eq!(find(&known, b"t2"), Some(digest(b"t2")));
        for wrong in [&b"t3"[..], b"", b"t1 ", b"T1"] {
            assert_eq!(find(&known, wrong), None, "{wrong:?}");
        }
        assert_eq!(find(&[], b"t1"), None);
    }

    #[test]
    fn a_rotated_file_is_read_again_and_a_broken_or_empty_one_revokes_every_token() {
        let dir = std::env::temp_dir().join(format!("kickq-tokens-{}-{}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens");
        std::fs::write(&path, "old\n").unwrap();
        let tokens = Tokens::load(&path).unwrap();
        assert!(tokens.check(b"old").is_some());
        // Atomic rotation: a new file renamed over the old one.
        std::fs::write(dir.join("next"), "# rotated\nnew\n").unwrap();
        std::fs::rename(dir.join("next"), &path).unwrap();
        assert!(tokens.check(b"new").is_some());
        assert!(tokens.check(b"old").is_none());
        std::fs::remove_file(&path).unwrap();
        assert!(tokens.check(b"new").is_none(), "a vanished file revokes every token");
        assert!(matches!(Tokens::load(&path), Err(TokenError::Read { .. })));
        // Back: read again at once (a failed file is re-read on every check).
        std::fs::write(&path, "new\n").unwrap();
        assert!(tokens.check(b"new").is_some());
        let id = tokens.check(b"new").unwrap();
        assert!(tokens.still_has(&id));
        // Emptied: fail closed, every token refused.
        std::fs::write(&path, "# none\n").unwrap();
        assert!(matches!(Tokens::load(&path), Err(TokenError::Empty(_))));
        assert!(tokens.check(b"new").is_none(), "an emptied file revokes every token");
        assert!(!tokens.still_has(&id));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
