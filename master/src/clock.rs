//! The two impure inputs of the masters' decisions, in one place: new
//! uids (and name suffixes) and the time as objects record it. The pure
//! controllers take both from their callers; the control pass takes a
//! [`Clock`], which is the system's in production and a fixed one in its
//! scenario files, so that a pass's writes can be asserted exactly.

use std::cell::Cell;
use std::time::SystemTime;

/// A new uid (a random UUID).
pub fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Now, RFC 3339, to the second (as `creationTimestamp` and events carry it).
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `web-7d9f8`-style suffixes are five of Kubernetes' unambiguous characters.
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// One pass's time and source of ids.
///
/// Invariant: a fixed clock hands out ids in a sequence that depends only
/// on the order of the calls, so the same pass over the same snapshot
/// makes the same writes.
#[derive(Debug)]
pub struct Clock {
    now: SystemTime,
    /// `None`: random ids; else the next number of a fixed sequence.
    next: Option<Cell<u64>>,
}

impl Clock {
    /// The system's time now and random ids.
    pub fn system() -> Clock {
        Clock {
            now: SystemTime::now(),
            next: None,
        }
    }

    /// Time stands at `now`; ids count up from `first`.
    pub fn fixed(now: SystemTime, first: u64) -> Clock {
        Clock {
            now,
            next: Some(Cell::new(first)),
        }
    }

    /// The number a fixed clock's next id takes (to continue the sequence
    /// in the next pass); `None` for the system's.
    pub fn next_id(&self) -> Option<u64> {
        self.next.as_ref().map(Cell::get)
    }

    /// The time of the pass.
    pub fn now(&self) -> SystemTime {
        self.now
    }

    /// The time of the pass, as objects record it.
    pub fn rfc3339(&self) -> String {
        rfc3339(self.now)
    }

    fn count(&self) -> Option<u64> {
        self.next.as_ref().map(|n| {
            let v = n.get();
            n.set(v + 1);
            v
        })
    }

    /// A new uid: random, or `00000000-0000-4000-8000-<n>` from a fixed clock.
    pub fn uid(&self) -> String {
        match self.count() {
            Some(n) => format!("00000000-0000-4000-8000-{n:012}"),
            None => new_uid(),
        }
    }

    /// A five-character name suffix (`web-7d9f8`): random, or the next of a
    /// fixed sequence.
    pub fn suffix(&self) -> String {
        let bytes: [u8; 5] = match self.count() {
            Some(mut n) => std::array::from_fn(|_| {
                let b = (n % SUFFIX_ALPHABET.len() as u64) as u8;
                n /= SUFFIX_ALPHABET.len() as u64;
                b
            }),
            None => {
                let uuid = uuid::Uuid::new_v4();
                std::array::from_fn(|i| uuid.as_bytes()[i])
            }
        };
        bytes
            .iter()
            .map(|b| SUFFIX_ALPHABET[*b as usize % SUFFIX_ALPHABET.len()] as char)
            .collect()
    }
}
