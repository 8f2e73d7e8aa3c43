//! Scenario files (filled below).
