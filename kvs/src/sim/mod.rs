//! The deterministic simulator (filled below).
