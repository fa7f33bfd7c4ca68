//! The mock's pure request checks: parses the raw query and answers the vendor's code for the first check that fails.

use crate::job::IdCharset;
use crate::secret::Secret;
use crate::zego::signature;

/// Success.
pub const OK: i64 = 0;
/// Input parameter error.
pub const PARAM_ERROR: i64 = 2;
/// More than [`MAX_USERS`] user ids.
pub const USER_LIST_TOO_LONG: i64 = 50011;
/// The AppId is not a uint32.
pub const APP_ID_FORMAT: i64 = 100000001;
/// `Timestamp` empty.
pub const TIMESTAMP_EMPTY: i64 = 100000002;
/// `Timestamp` not an integer.
pub const TIMESTAMP_FORMAT: i64 = 100000003;
/// `Timestamp` further than [`MAX_SKEW_SECS`] from the server's clock.
pub const SIGNATURE_EXPIRED: i64 = 100000004;
/// `Signature` does not match.
pub const SIGNATURE_ERROR: i64 = 100000005;
/// `Action` empty.
pub const ACTION_EMPTY: i64 = 100000006;
/// `Action` not supported.
pub const ACTION_UNSUPPORTED: i64 = 100000007;
/// `SignatureNonce` empty.
pub const NONCE_EMPTY: i64 = 100000008;
/// `Signature` empty.
pub const SIGNATURE_EMPTY: i64 = 100000009;
/// No ServerSecret for the AppId (not the configured one).
pub const UNKNOWN_APP_ID: i64 = 100000010;
/// `SignatureVersion` empty.
pub const VERSION_EMPTY: i64 = 100000013;
/// `SignatureVersion` not supported.
pub const VERSION_UNSUPPORTED: i64 = 100000014;
/// Over the per-AppId request rate.
pub const RATE_LIMITED: i64 = 206;
/// The user is not in the room.
pub const USER_NOT_IN_ROOM: i64 = 50002;

/// Most `UserId[]` values one call may carry.
pub const MAX_USERS: usize = 5;
/// Longest `CustomReason`, in bytes.
pub const MAX_REASON_BYTES: usize = 256;
/// Largest allowed distance between `Timestamp` and the server's clock.
pub const MAX_SKEW_SECS: u64 = 600;

/// One scalar parameter as it appeared in the query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Param {
    /// Absent, or present with an empty value (the vendor's "empty").
    #[default]
    Missing,
    /// Present once, non-empty.
    One(String),
    /// Present more than once: ambiguous, so an input parameter error.
    Repeated,
}

impl Param {
    fn push(&mut self, value: String) {
        *self = match std::mem::take(self) {
            Param::Missing if value.is_empty() => Param::Missing,
            Param::Missing => Param::One(value),
            Param::One(_) | Param::Repeated => Param::Repeated,
        };
    }

    /// The value, or `empty` when missing and [`PARAM_ERROR`] when repeated.
    fn get(&self, empty: i64) -> Result<&str, i64> {
        match self {
            Param::Missing => Err(empty),
            Param::One(v) => Ok(v),
            Param::Repeated => Err(PARAM_ERROR),
        }
    }
}

/// A KickoutUser query, decoded pair by pair; unknown keys are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// `Action`.
    pub action: Param,
    /// `AppId`.
    pub app_id: Param,
    /// `SignatureNonce`.
    pub nonce: Param,
    /// `Timestamp`.
    pub timestamp: Param,
    /// `Signature`.
    pub signature: Param,
    /// `SignatureVersion`.
    pub version: Param,
    /// `RoomId`.
    pub room_id: Param,
    /// `CustomReason`.
    pub reason: Param,
    /// Every `UserId[]` value, in order, empty ones included.
    pub user_ids: Vec<String>,
}

/// Decodes a raw query string with the form-urlencoded decoder, keeping
/// repeated `UserId[]` keys in order.
pub fn parse_query(raw: &str) -> Query {
    let mut q = Query::default();
    for (key, value) in url::form_urlencoded::parse(raw.as_bytes()) {
        let value = value.into_owned();
        match key.as_ref() {
            "Action" => q.action.push(value),
            "AppId" => q.app_id.push(value),
            "SignatureNonce" => q.nonce.push(value),
            "Timestamp" => q.timestamp.push(value),
            "Signature" => q.signature.push(value),
            "SignatureVersion" => q.version.push(value),
            "RoomId" => q.room_id.push(value),
            "CustomReason" => q.reason.push(value),
            "UserId[]" => q.user_ids.push(value),
            _ => {}
        }
    }
    q
}

/// Checks the common parameters and the signature in the vendor's order and
/// returns the signed AppId, or the code for the first failure.
/// `secret_of` gives the ServerSecret of each AppId served (`None`: unknown,
/// 100000010); `now_unix` is the server's clock (with any test offset applied).
pub fn check_auth<'s>(q: &Query, secret_of: impl Fn(u32) -> Option<&'s Secret>, now_unix: i64) -> Result<u32, i64> {
    let action = q.action.get(ACTION_EMPTY)?;
    if action != "KickoutUser" {
        return Err(ACTION_UNSUPPORTED);
    }
    let given_app = parse_u32(q.app_id.get(APP_ID_FORMAT)?).ok_or(APP_ID_FORMAT)?;
    let secret = secret_of(given_app).ok_or(UNKNOWN_APP_ID)?;
    let nonce = q.nonce.get(NONCE_EMPTY)?;
    if nonce.len() != 16 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(PARAM_ERROR);
    }
    let timestamp_text = q.timestamp.get(TIMESTAMP_EMPTY)?;
    let timestamp = parse_i64(timestamp_text).ok_or(TIMESTAMP_FORMAT)?;
    if timestamp.abs_diff(now_unix) > MAX_SKEW_SECS {
        return Err(SIGNATURE_EXPIRED);
    }
    let given_signature = q.signature.get(SIGNATURE_EMPTY)?;
    if q.version.get(VERSION_EMPTY)? != "2.0" {
        return Err(VERSION_UNSUPPORTED);
    }
    if given_signature != signature(given_app, nonce, secret, timestamp) {
        return Err(SIGNATURE_ERROR);
    }
    Ok(given_app)
}

/// The business parameters of a call that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KickCall {
    /// Non-empty room id.
    pub room_id: String,
    /// 1 to [`MAX_USERS`] non-empty user ids, as sent.
    pub user_ids: Vec<String>,
    /// At most [`MAX_REASON_BYTES`] bytes; `None` when absent or empty.
    pub reason: Option<String>,
}

/// Checks `RoomId`, `UserId[]` and `CustomReason`, after auth and the rate
/// limit. A room or user id with a character `charset` refuses is an input
/// parameter error: with [`IdCharset::Vendor`] that is the vendor's
/// documented id set, the very rule `kickq::job` validates jobs with.
pub fn check_call(q: &Query, charset: IdCharset) -> Result<KickCall, i64> {
    let room_id = q.room_id.get(PARAM_ERROR)?.to_owned();
    if q.user_ids.is_empty() {
        return Err(PARAM_ERROR);
    }
    if q.user_ids.len() > MAX_USERS {
        return Err(USER_LIST_TOO_LONG);
    }
    if q.user_ids.iter().any(String::is_empty) {
        return Err(PARAM_ERROR);
    }
    let refused = |id: &String| charset.first_refused(id).is_some();
    if refused(&room_id) || q.user_ids.iter().any(refused) {
        return Err(PARAM_ERROR);
    }
    let reason = match &q.reason {
        Param::Missing => None,
        Param::One(r) if r.len() > MAX_REASON_BYTES => return Err(PARAM_ERROR),
        Param::One(r) => Some(r.clone()),
        Param::Repeated => return Err(PARAM_ERROR),
    };
    Ok(KickCall {
        room_id,
        user_ids: q.user_ids.clone(),
        reason,
    })
}

/// Digits only: `str::parse` would also take a leading `+`.
fn parse_u32(s: &str) -> Option<u32> {
    s.bytes().all(|b| b.is_ascii_digit()).then(|| s.parse().ok()).flatten()
}

/// An optional `-` then digits.
fn parse_i64(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: u32 = 1234567890;
    const NOW: i64 = 1_700_000_000;
    const NONCE: &str = "fedcba9876543210";

    fn secret() -> Secret {
        Secret::new("0123456789abcdef0123456789abcdef")
    }

    /// A valid query with `edit` applied to its pairs; the signature is
    /// computed from the final AppId/nonce/timestamp unless `Signature` is set.
    fn query(edit: impl FnOnce(&mut Vec<(String, String)>)) -> String {
        let mut pairs: Vec<(String, String)> = [
            ("Action", "KickoutUser".to_owned()),
            ("AppId", APP.to_string()),
            ("SignatureNonce", NONCE.to_owned()),
            ("Timestamp", NOW.to_string()),
            ("SignatureVersion", "2.0".to_owned()),
            ("RoomId", "room".to_owned()),
            ("UserId[]", "u1".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        edit(&mut pairs);
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        if !pairs.iter().any(|(k, _)| k == "Signature") {
            let app = get("AppId").parse().unwrap_or(0);
            let ts = get("Timestamp").parse().unwrap_or(0);
            pairs.push((
                "Signature".into(),
                signature(app, &get("SignatureNonce"), &secret(), ts),
            ));
        }
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &pairs {
            out.append_pair(k, v);
        }
        out.finish()
    }

    fn remove(key: &'static str) -> impl FnOnce(&mut Vec<(String, String)>) {
        move |p| p.retain(|(k, _)| k != key)
    }

    fn set(key: &'static str, value: impl Into<String>) -> impl FnOnce(&mut Vec<(String, String)>) {
        let value = value.into();
        move |p| {
            p.retain(|(k, _)| k != key);
            p.push((key.to_owned(), value));
        }
    }

    fn add(key: &'static str, value: impl Into<String>) -> impl FnOnce(&mut Vec<(String, String)>) {
        let value = value.into();
        move |p| p.push((key.to_owned(), value))
    }

    fn verdict(raw: &str) -> Result<KickCall, i64> {
        verdict_with(raw, IdCharset::Vendor)
    }

    fn verdict_with(raw: &str, charset: IdCharset) -> Result<KickCall, i64> {
        let q = parse_query(raw);
        let secret = secret();
        check_auth(&q, |app| (app == APP).then_some(&secret), NOW)?;
        check_call(&q, charset)
    }

    #[test]
    fn valid_query_passes() {
        let call = verdict(&query(|_| {})).unwrap();
        assert_eq!(call.room_id, "room");
        assert_eq!(call.user_ids, ["u1"]);
        assert_eq!(call.reason, None);
    }

    #[test]
    fn check_table() {
        let users = |n: usize| {
            move |p: &mut Vec<(String, String)>| {
                p.retain(|(k, _)| k != "UserId[]");
                p.extend((0..n).map(|i| ("UserId[]".to_owned(), format!("u{i}"))));
            }
        };
        let cases: Vec<(&str, String, i64)> = vec![
            ("no Action", query(remove("Action")), ACTION_EMPTY),
            ("empty Action", query(set("Action", "")), ACTION_EMPTY),
            ("other Action", query(set("Action", "CloseRoom")), ACTION_UNSUPPORTED),
            ("no AppId", query(remove("AppId")), APP_ID_FORMAT),
            ("AppId text", query(set("AppId", "abc")), APP_ID_FORMAT),
            ("AppId over u32", query(set("AppId", "4294967296")), APP_ID_FORMAT),
            ("AppId with +", query(set("AppId", "+1234567890")), APP_ID_FORMAT),
            ("other AppId", query(set("AppId", "42")), UNKNOWN_APP_ID),
            ("no nonce", query(remove("SignatureNonce")), NONCE_EMPTY),
            ("short nonce", query(set("SignatureNonce", "abc")), PARAM_ERROR),
            (
                "non-hex nonce",
                query(set("SignatureNonce", "zzzzzzzzzzzzzzzz")),
                PARAM_ERROR,
            ),
            ("no Timestamp", query(remove("Timestamp")), TIMESTAMP_EMPTY),
            ("Timestamp text", query(set("Timestamp", "soon")), TIMESTAMP_FORMAT),
            (
                "Timestamp float",
                query(set("Timestamp", "1700000000.5")),
                TIMESTAMP_FORMAT,
            ),
            (
                "Timestamp 601 s old",
                query(set("Timestamp", (NOW - 601).to_string())),
                SIGNATURE_EXPIRED,
            ),
            (
                "Timestamp 601 s ahead",
                query(set("Timestamp", (NOW + 601).to_string())),
                SIGNATURE_EXPIRED,
            ),
            ("no Signature", query(set("Signature", "")), SIGNATURE_EMPTY),
            ("no version", query(remove("SignatureVersion")), VERSION_EMPTY),
            (
                "version 1.0",
                query(set("SignatureVersion", "1.0")),
                VERSION_UNSUPPORTED,
            ),
            (
                "bad Signature",
                query(set("Signature", "0".repeat(32))),
                SIGNATURE_ERROR,
            ),
            (
                "upper-case Signature",
                query(|p| {
                    let sig = signature(APP, NONCE, &secret(), NOW).to_uppercase();
                    p.push(("Signature".into(), sig));
                }),
                SIGNATURE_ERROR,
            ),
            ("two AppIds", query(add("AppId", APP.to_string())), PARAM_ERROR),
            ("no RoomId", query(remove("RoomId")), PARAM_ERROR),
            ("empty RoomId", query(set("RoomId", "")), PARAM_ERROR),
            ("no users", query(users(0)), PARAM_ERROR),
            (
                "UserId without brackets",
                query(|p| {
                    p.retain(|(k, _)| k != "UserId[]");
                    p.push(("UserId".into(), "u".into()));
                }),
                PARAM_ERROR,
            ),
            ("six users", query(users(6)), USER_LIST_TOO_LONG),
            ("empty user id", query(add("UserId[]", "")), PARAM_ERROR),
            (
                "user id with a space",
                query(add("UserId[]", "with space")),
                PARAM_ERROR,
            ),
            ("user id with an emoji", query(add("UserId[]", "u😀")), PARAM_ERROR),
            ("user id with brackets", query(add("UserId[]", "a[]")), PARAM_ERROR),
            ("user id with a control", query(add("UserId[]", "a\u{1}")), PARAM_ERROR),
            ("room id with a space", query(set("RoomId", "room 1")), PARAM_ERROR),
            ("room id with a pipe", query(set("RoomId", "room|1")), PARAM_ERROR),
            (
                "six users, one out of the set",
                query(|p| p.extend((2..=6).map(|i| ("UserId[]".to_owned(), format!("u {i}"))))),
                USER_LIST_TOO_LONG,
            ),
            (
                "257-byte reason",
                query(set("CustomReason", "x".repeat(257))),
                PARAM_ERROR,
            ),
            (
                "two reasons",
                query(|p| {
                    p.push(("CustomReason".into(), "a".into()));
                    p.push(("CustomReason".into(), "b".into()));
                }),
                PARAM_ERROR,
            ),
        ];
        for (name, raw, code) in cases {
            assert_eq!(verdict(&raw).map(|_| ()), Err(code), "{name}: {raw}");
        }
    }

    #[test]
    fn boundaries_pass() {
        let ok = [
            query(set("Timestamp", (NOW - 600).to_string())),
            query(set("Timestamp", (NOW + 600).to_string())),
            query(set("CustomReason", "é".repeat(128))),
            query(set("SignatureNonce", "FEDCBA9876543210")),
            query(|p| p.extend((2..=5).map(|i| ("UserId[]".to_owned(), format!("u{i}"))))),
            query(add("Extra", "ignored")),
            query(set("RoomId", "~!@#$%^&*()_+=-`;',.<>/\\")),
            query(add("UserId[]", "~!@#$%^&*()_+=-`;',.<>/\\")),
        ];
        for raw in ok {
            assert!(verdict(&raw).is_ok(), "{raw}: {:?}", verdict(&raw));
        }
    }

    #[test]
    fn wrong_secret_is_a_signature_error() {
        let q = parse_query(&query(|_| {}));
        let other = Secret::new("other");
        assert_eq!(
            check_auth(&q, |app| (app == APP).then_some(&other), NOW),
            Err(SIGNATURE_ERROR)
        );
    }

    #[test]
    fn each_app_is_checked_against_its_own_secret() {
        const OTHER: u32 = 42;
        let (mine, theirs) = (secret(), Secret::new("the-other-apps-secret"));
        let secret_of = |app| match app {
            APP => Some(&mine),
            OTHER => Some(&theirs),
            _ => None,
        };
        let signed_for = |app: u32, with: &Secret| {
            query(|p| {
                p.retain(|(k, _)| k != "AppId");
                p.push(("AppId".into(), app.to_string()));
                p.push(("Signature".into(), signature(app, NONCE, with, NOW)));
            })
        };
        let cases = [
            ("own app, own secret", signed_for(APP, &mine), Ok(APP)),
            ("other app, its secret", signed_for(OTHER, &theirs), Ok(OTHER)),
            (
                "own app, other's secret",
                signed_for(APP, &theirs),
                Err(SIGNATURE_ERROR),
            ),
            ("other app, my secret", signed_for(OTHER, &mine), Err(SIGNATURE_ERROR)),
            ("unknown app", signed_for(7, &mine), Err(UNKNOWN_APP_ID)),
        ];
        for (name, raw, want) in cases {
            assert_eq!(check_auth(&parse_query(&raw), secret_of, NOW), want, "{name}");
        }
    }

    #[test]
    fn hostile_ids_decode_to_one_value_each() {
        let hostile = [
            "a&UserId[]=victim",
            "x=y",
            "p+q",
            "100%",
            "#frag",
            "semi;colon",
            "with space",
            "é漢字",
        ];
        let raw = query(|p| {
            p.retain(|(k, _)| k != "UserId[]");
            p.extend(hostile.iter().take(5).map(|u| ("UserId[]".to_owned(), (*u).to_owned())));
        });
        assert_eq!(verdict_with(&raw, IdCharset::Any).unwrap().user_ids, hostile[..5]);
        let raw = query(|p| {
            p.retain(|(k, _)| k != "UserId[]");
            p.extend(hostile[5..].iter().map(|u| ("UserId[]".to_owned(), (*u).to_owned())));
        });
        assert_eq!(verdict_with(&raw, IdCharset::Any).unwrap().user_ids, hostile[5..]);
        assert_eq!(
            verdict(&raw),
            Err(PARAM_ERROR),
            "the vendor set refuses a space and non-ASCII"
        );
    }

    #[test]
    fn any_charset_takes_what_vendor_refuses_but_control_characters() {
        for (raw, any) in [
            (query(add("UserId[]", "with space")), Ok(())),
            (query(set("RoomId", "é 漢")), Ok(())),
            (query(add("UserId[]", "a\u{1}")), Err(PARAM_ERROR)),
        ] {
            assert_eq!(verdict(&raw).map(|_| ()), Err(PARAM_ERROR), "{raw}");
            assert_eq!(verdict_with(&raw, IdCharset::Any).map(|_| ()), any, "{raw}");
        }
    }
}
