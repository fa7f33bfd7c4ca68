//! Bearer tokens of the HTTP intake and the console: read from a token file (`name:token` or `token` a line, `#`
//! comments and blank lines ignored), checked for strength, re-read when the file changes, and compared in constant
//! time.
//!
//! Only SHA-256 digests of the tokens are kept, with their names. A
//! presented token is hashed and compared with every digest by
//! `subtle::ConstantTimeEq`, all of them, whatever matched: neither its
//! length nor which token it resembles shows in the time taken. Logs,
//! idempotency scopes and console actions name the token, never the secret.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use subtle::ConstantTimeEq;

/// Which token authenticated a request (its digest): the rate cap's key,
/// never the token itself.
pub(crate) type TokenId = [u8; 32];

/// The least strength of a token, in bits (as [`token_bits`] counts them):
/// what a guesser must search. 128 bits is the usual floor for a bearer
/// secret (`openssl rand -hex 16` makes one).
pub(crate) const MIN_TOKEN_BITS: u32 = 128;

/// Longest token name.
pub(crate) const MAX_TOKEN_NAME: usize = 64;

/// Why the token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// It could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The token file.
        path: PathBuf,
        /// The operating system's refusal.
        source: std::io::Error,
    },
    /// It holds no usable token (only blank lines, comments, or tokens
    /// refused as weak or as a repeated name).
    #[error(
        "{0} holds no usable token (`name:token` or `token` a line, each of at least {MIN_TOKEN_BITS} bits, \
         e.g. 32 hex digits from `openssl rand -hex 16`; blank lines and # comments are ignored)"
    )]
    Empty(PathBuf),
}

/// One line of a token file: `name:token`, or a bare `token` (named by
/// its digest: [`default_name`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Line<'a> {
    /// Its line number, for the log.
    pub number: usize,
    /// The name given, if any.
    pub name: Option<&'a str>,
    /// The secret.
    pub token: &'a str,
}

/// Whether `s` can be a token's name: 1 to [`MAX_TOKEN_NAME`] characters
/// of letters, digits, `.`, `_`, `-` and `@`, starting with a letter, and
/// not 8 or more hex digits alone (what the first part of a bare hex secret
/// holding a `:` would be: such a line stays one token, and no part of a
/// secret becomes a logged name).
fn is_name(s: &str) -> bool {
    let hex_run = s.len() >= 8 && s.chars().all(|c| c.is_ascii_hexdigit());
    s.len() <= MAX_TOKEN_NAME
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
        && !hex_run
}

/// The lines of a token file's text: trimmed; blank lines and lines
/// starting with `#` skipped. A line whose part before its first `:` is a
/// name is `name:token`; any other line is a bare token (so a token that
/// holds a `:` must be written with a name).
pub(crate) fn parse_tokens(text: &str) -> Vec<Line<'_>> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(number, l)| match l.split_once(':') {
            Some((name, token)) if is_name(name.trim()) => Line {
                number,
                name: Some(name.trim()),
                token: token.trim(),
            },
            _ => Line {
                number,
                name: None,
                token: l,
            },
        })
        .collect()
}

/// Fewest distinct characters a token may hold: a random token of 22 or
/// more characters holds far more; `aaaa…` or `0101…` holds fewer, and
/// is refused whatever its length.
pub(crate) const MIN_DISTINCT_CHARS: usize = 8;

/// The strength of a token in bits: its length times the bits of the
/// smallest usual alphabet that holds all its characters (digits: 3.32,
/// hex: 4, base64 or base64url: 6, any other printable ASCII: 6.5,
/// anything else: 8); 0 for a token of fewer than [`MIN_DISTINCT_CHARS`]
/// distinct characters. kickq cannot see how a token was made, so this
/// counts what a guesser of that alphabet must search; a word-like token
/// counts more than it is worth.
pub(crate) fn token_bits(token: &str) -> u32 {
    let distinct: std::collections::HashSet<char> = token.chars().collect();
    if distinct.len() < MIN_DISTINCT_CHARS {
        return 0;
    }
    let per_char = if token.chars().all(|c| c.is_ascii_digit()) {
        std::f64::consts::LOG2_10
    } else if token.chars().all(|c| c.is_ascii_hexdigit()) {
        4.0
    } else if token
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '/' | '='))
    {
        6.0
    } else if token.chars().all(|c| c.is_ascii_graphic()) {
        6.5
    } else {
        8.0
    };
    (token.chars().count() as f64 * per_char) as u32
}

/// The name of a token given without one: the first 8 bytes of its
/// SHA-256 in hex (what idempotency keys were scoped by before tokens had
/// names, so a bare token keeps its scope).
pub(crate) fn default_name(id: &TokenId) -> String {
    hex::encode(&id[..8])
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

/// A token of the file, as kept: its digest and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Known {
    /// The token's SHA-256.
    pub id: TokenId,
    /// Its name in logs, idempotency scopes and console actions.
    pub name: String,
}

/// The token `presented` is, if it is one of `known`: every digest is
/// compared, in constant time each.
pub(crate) fn find(known: &[Known], presented: &[u8]) -> Option<Known> {
    use subtle::ConditionallySelectable;
    let d = digest(presented);
    let mut index = u32::MAX;
    for (i, k) in known.iter().enumerate() {
        index.conditional_assign(&(i as u32), k.id.ct_eq(&d));
    }
    known.get(index as usize).cloned()
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
    loaded: Mutex<(Option<Stamp>, Vec<Known>)>,
}

/// Reads the token file: each line's token, unless it is weaker than
/// [`MIN_TOKEN_BITS`] or repeats an earlier line's name, which are refused
/// with an ERROR line each (its line number and name, never the token).
fn read(path: &Path, reader: &str) -> Result<Vec<Known>, TokenError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut tokens: Vec<Known> = Vec::new();
    for line in parse_tokens(&text) {
        if let (None, Some((before, _))) = (line.name, line.token.split_once(':')) {
            let name_like = !before.is_empty()
                && before.len() <= MAX_TOKEN_NAME
                && before
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
            if name_like {
                tracing::warn!(
                    file = %path.display(),
                    line = line.number,
                    "{reader}: the part before ':' is not taken as a name (a name starts with a letter and is \
                     not a run of 8 or more hex digits): the whole line is one token"
                );
            }
        }
        let id = digest(line.token.as_bytes());
        let name = line.name.map_or_else(|| default_name(&id), str::to_owned);
        let bits = token_bits(line.token);
        if bits < MIN_TOKEN_BITS {
            tracing::error!(
                file = %path.display(),
                line = line.number,
                token = %name,
                bits,
                "{reader}: token refused: about {bits} bits, fewer than {MIN_TOKEN_BITS} \
                 (use 32 hex digits or more: `openssl rand -hex 16`)"
            );
            continue;
        }
        if tokens.iter().any(|k| k.name == name || k.id == id) {
            tracing::error!(
                file = %path.display(),
                line = line.number,
                token = %name,
                "{reader}: token refused: its name or its secret is an earlier line's"
            );
            continue;
        }
        tokens.push(Known { id, name });
    }
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
        let tokens = read(path, reader)?;
        Ok(Tokens {
            path: path.to_owned(),
            reader,
            loaded: Mutex::new((st, tokens)),
        })
    }

    /// Which token `presented` is, if any (the file re-read first if it
    /// changed: [`Tokens::current`]).
    pub(crate) fn check(&self, presented: &[u8]) -> Option<Known> {
        let loaded = self.current();
        find(&loaded.1, presented)
    }

    /// Whether any token is usable now (the file read, with a usable token):
    /// while none is, a refused request says nothing about its client.
    pub(crate) fn usable(&self) -> bool {
        // As last read: a broken file is re-read (and its ERROR logged) by
        // the check that came before, not again here.
        !self.loaded.lock().expect("no panic holds the token lock").1.is_empty()
    }

    /// Whether the token `id` is still in the file (a console session checks
    /// the token that opened it on every request).
    pub(crate) fn still_has(&self, id: &TokenId) -> bool {
        self.current().1.iter().any(|k| &k.id == id)
    }

    /// The tokens now. The file is re-read when it changed since the last
    /// read, and on every call while it cannot be used. A file that is gone,
    /// unreadable or holds no token revokes every token (fail closed), with
    /// an ERROR line each time it is read so: revoking a token by emptying
    /// or removing the file must never leave it working.
    fn current(&self) -> std::sync::MutexGuard<'_, (Option<Stamp>, Vec<Known>)> {
        let mut loaded = self.loaded.lock().expect("no panic holds the token lock");
        let now = stamp(&self.path);
        let failed = loaded.1.is_empty();
        if now != loaded.0 || failed {
            loaded.0 = now;
            match read(&self.path, self.reader) {
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

/// 32 random bytes in hex (256 bits): the console's session cookies, CSRF
/// tokens and the demo's login token.
pub(crate) fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut b);
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_lines_by_table() {
        let line = |number, name, token| Line { number, name, token };
        let cases: &[(&str, &[Line])] = &[
            ("", &[]),
            ("a\n", &[line(1, None, "a")]),
            ("  a  \r\n\n# old: x\nb\n", &[line(1, None, "a"), line(4, None, "b")]),
            ("#only\n\n   \n", &[]),
            ("a b\n", &[line(1, None, "a b")]),
            ("ci-bot:abc\n", &[line(1, Some("ci-bot"), "abc")]),
            (" ops@example : abc:def \n", &[line(1, Some("ops@example"), "abc:def")]),
            // Not a name before the colon: the whole line is the token.
            ("a b:c\n", &[line(1, None, "a b:c")]),
            ("1st:abc\n", &[line(1, None, "1st:abc")]),
            // A hex secret holding a colon stays whole: no part of it is a name.
            ("deadbeef01:23456789\n", &[line(1, None, "deadbeef01:23456789")]),
            ("cafe:23456789\n", &[line(1, Some("cafe"), "23456789")]),
        ];
        for (text, want) in cases {
            assert_eq!(parse_tokens(text), *want, "{text:?}");
        }
    }

    #[test]
    fn token_strength_by_table() {
        let cases: &[(&str, u32)] = &[
            ("", 0),
            ("0123456789abcdef0123456789abcdef", 128),
            ("0123456789abcdef0123456789abcde", 124),
            ("ZYXWVUTSRQPONMLKJIHGFz", 132),
            ("ABCDEF0123ABCDEF0123AB", 88),
            // Digits alone: 3.32 bits each.
            ("01234567890123456789012345678901234567", 126),
            ("012345678901234567890123456789012345678", 129),
            // Too few distinct characters, whatever the length.
            ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 0),
            ("0101010101010101010101010101010101010101", 0),
            ("intake-test-token-1", 114),
            ("p@ssw0rd!", 58),
            ("éèêëēėęě", 64),
        ];
        for (token, bits) in cases {
            assert_eq!(token_bits(token), *bits, "{token:?}");
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
        let k = |t: &[u8], name: &str| Known {
            id: digest(t),
            name: name.into(),
        };
        let known = [k(b"t1", "one"), k(b"t2", "two")];
        assert_eq!(find(&known, b"t1"), Some(k(b"t1", "one")));
        assert_eq!(find(&known, b"t2"), Some(k(b"t2", "two")));
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
        let (old, new) = (OLD.as_bytes(), NEW.as_bytes());
        std::fs::write(&path, format!("{OLD}\n")).unwrap();
        let tokens = Tokens::load(&path).unwrap();
        assert!(tokens.check(old).is_some());
        // Atomic rotation: a new file renamed over the old one.
        std::fs::write(dir.join("next"), format!("# rotated\n{NEW}\n")).unwrap();
        std::fs::rename(dir.join("next"), &path).unwrap();
        assert!(tokens.check(new).is_some());
        assert!(tokens.check(old).is_none());
        std::fs::remove_file(&path).unwrap();
        assert!(tokens.check(new).is_none(), "a vanished file revokes every token");
        assert!(matches!(Tokens::load(&path), Err(TokenError::Read { .. })));
        // Back: read again at once (a failed file is re-read on every check).
        std::fs::write(&path, format!("{NEW}\n")).unwrap();
        assert!(tokens.check(new).is_some());
        let id = tokens.check(new).unwrap().id;
        assert!(tokens.still_has(&id));
        // Emptied: fail closed, every token refused.
        std::fs::write(&path, "# none\n").unwrap();
        assert!(matches!(Tokens::load(&path), Err(TokenError::Empty(_))));
        assert!(tokens.check(new).is_none(), "an emptied file revokes every token");
        assert!(!tokens.still_has(&id));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    const OLD: &str = "0123456789abcdef0123456789abcdef";
    const NEW: &str = "fedcba9876543210fedcba9876543210";

    /// Weak tokens and repeated names are refused when the file is read;
    /// the others keep working, by their names.
    #[test]
    fn weak_tokens_and_repeated_names_are_refused_and_names_are_kept() {
        let dir = std::env::temp_dir().join(format!("kickq-tokens-{}-{}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens");
        let text = format!("ci:{OLD}\nweak:hunter2\nci:{NEW}\n{NEW}\nshort-bare-token\n");
        std::fs::write(&path, text).unwrap();
        let tokens = Tokens::load(&path).unwrap();
        assert_eq!(tokens.check(OLD.as_bytes()).map(|k| k.name), Some("ci".to_owned()));
        let bare = tokens.check(NEW.as_bytes()).expect("the bare line of NEW is kept");
        assert_eq!(bare.name, default_name(&digest(NEW.as_bytes())));
        assert_eq!(bare.name.len(), 16);
        for refused in ["hunter2", "short-bare-token"] {
            assert!(tokens.check(refused.as_bytes()).is_none(), "{refused}");
        }
        std::fs::write(&path, "weak:hunter2\n").unwrap();
        assert!(matches!(Tokens::load(&path), Err(TokenError::Empty(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
