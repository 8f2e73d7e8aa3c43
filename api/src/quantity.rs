//! Resource quantities in Kubernetes' notation: cpu as cores (`"0.5"`, `"2"`)
//! or millicores (`"500m"`); memory as bytes with an optional binary
//! (`Ki`, `Mi`, `Gi`, `Ti`) or decimal (`k`, `M`, `G`, `T`) suffix.
//!
//! Parsing is pure and total: every input yields a value or an error that
//! says what is accepted. Values are integers (millicores, bytes) so that sums
//! and comparisons in the scheduler are exact.

/// Parses a cpu quantity into millicores: `"250m"` → 250, `"1.5"` → 1500.
pub fn parse_cpu_millis(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let bad = || {
        format!(
            "{text:?} is not a cpu quantity; write cores (\"0.5\", \"2\") or millicores (\"500m\")"
        )
    };
    if let Some(m) = t.strip_suffix('m') {
        return m.parse::<u64>().map_err(|_| bad());
    }
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    if whole.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    if !whole.chars().all(|c| c.is_ascii_digit()) || !frac.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    if frac.len() > 3 {
        return Err(format!(
            "{text:?} is finer than a millicore; use at most three decimals"
        ));
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac_millis: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<3}").parse().map_err(|_| bad())?
    };
    whole
        .checked_mul(1000)
        .and_then(|w| w.checked_add(frac_millis))
        .ok_or_else(bad)
}

/// Parses a memory quantity into bytes: `"128Mi"` → 134217728, `"1G"` → 10⁹.
pub fn parse_memory_bytes(text: &str) -> Result<u64, String> {
    const SUFFIXES: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    let t = text.trim();
    let bad = || {
        format!(
            "{text:?} is not a memory quantity; write bytes with an optional suffix (\"128Mi\", \"1Gi\", \"500M\")"
        )
    };
    let (digits, factor) = SUFFIXES
        .iter()
        .find_map(|(s, f)| t.strip_suffix(s).map(|d| (d, *f)))
        .unwrap_or((t, 1));
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|d| d.checked_mul(factor))
        .ok_or_else(bad)
}

/// Formats millicores the way `kubectl` shows them (`"1500m"`, `"2"`).
pub fn format_cpu_millis(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

/// Formats bytes with the largest binary suffix that divides them exactly.
pub fn format_memory_bytes(bytes: u64) -> String {
    for (suffix, factor) in [
        ("Ti", 1u64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{}{suffix}", bytes / factor);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_accepts_cores_and_millicores() {
        assert_eq!(parse_cpu_millis("250m"), Ok(250));
        assert_eq!(parse_cpu_millis("1"), Ok(1000));
        assert_eq!(parse_cpu_millis("1.5"), Ok(1500));
        assert_eq!(parse_cpu_millis("0.05"), Ok(50));
        assert_eq!(parse_cpu_millis(".5"), Ok(500));
        for bad in [
            "",
            "m",
            "-1",
            "1.2345",
            "one",
            "1.5m",
            "99999999999999999999",
        ] {
            assert!(parse_cpu_millis(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn memory_accepts_binary_and_decimal_suffixes() {
        assert_eq!(parse_memory_bytes("128Mi"), Ok(128 << 20));
        assert_eq!(parse_memory_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(parse_memory_bytes("4096"), Ok(4096));
        for bad in ["", "Mi", "1.5Gi", "-1", "12XB", "99999999999Ti"] {
            assert!(parse_memory_bytes(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn formatting_round_trips() {
        for m in [0, 1, 250, 1000, 1500, 64_000] {
            assert_eq!(parse_cpu_millis(&format_cpu_millis(m)), Ok(m));
        }
        for b in [0, 1, 1024, 3 << 20, 5 << 30, 1_000_000] {
            assert_eq!(parse_memory_bytes(&format_memory_bytes(b)), Ok(b));
        }
    }
}
