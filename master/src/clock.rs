//! The two impure inputs of the masters' decisions, in one place: new
//! uids and the time as objects record it. The pure controllers take both
//! from their callers.

/// A new uid (a random UUID).
pub fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Now, RFC 3339, to the second (as `creationTimestamp` and events carry it).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
