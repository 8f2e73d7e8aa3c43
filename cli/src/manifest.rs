//! Reading manifests: files, directories (`-R` for their subdirectories)
//! or stdin, YAML or JSON, several documents per file (`---`). A document
//! that is a `List` (what `get -o yaml` prints for several objects)
//! contributes its items. Syntax errors name the file, line and column.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::errors::CliError;

/// One object read from a manifest, and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// `FILE` or `-`.
    pub source: String,
    /// The object.
    pub object: Value,
}

/// Parses one text (`source` names it in errors).
pub fn parse(source: &str, text: &str) -> Result<Vec<Document>, CliError> {
    let mut out = Vec::new();
    for de in serde_yaml_ng::Deserializer::from_str(text) {
        let value = Value::deserialize(de).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(" at line {} column {}", l.line(), l.column()))
                .unwrap_or_default();
            CliError::client(format!("error parsing {source}{at}: {e}"))
        })?;
        match value {
            Value::Null => {}
            Value::Object(ref map) if map.get("kind").and_then(Value::as_str) == Some("List") => {
                for item in map
                    .get("items")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
                {
                    out.push(Document {
                        source: source.to_string(),
                        object: item,
                    });
                }
            }
            Value::Object(_) => out.push(Document {
                source: source.to_string(),
                object: value,
            }),
            other => {
                return Err(CliError::client(format!(
                    "error parsing {source}: a manifest is a mapping with kind, metadata and spec, not {}",
                    kind_of(&other)
                )));
            }
        }
    }
    Ok(out)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "a list",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        _ => "null",
    }
}

/// Every manifest file under `dir` (`.yaml`, `.yml`, `.json`), sorted.
fn files_in(dir: &Path, recursive: bool) -> Result<Vec<PathBuf>, CliError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| CliError::client(format!("cannot read {}: {e}", dir.display())))?;
    for entry in entries {
        let path = entry
            .map_err(|e| CliError::client(format!("cannot read {}: {e}", dir.display())))?
            .path();
        if path.is_dir() {
            if recursive {
                out.extend(files_in(&path, true)?);
            }
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Reads `-f` arguments: files, directories, or `-` for stdin.
pub fn read(paths: &[String], recursive: bool) -> Result<Vec<Document>, CliError> {
    let mut out = Vec::new();
    for p in paths {
        if p == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| CliError::client(format!("cannot read stdin: {e}")))?;
            out.extend(parse("-", &text)?);
            continue;
        }
        let path = Path::new(p);
        let files = if path.is_dir() {
            files_in(path, recursive)?
        } else {
            vec![path.to_path_buf()]
        };
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|e| {
                CliError::client(format!(
                    "the path {:?} cannot be read: {e}",
                    f.display().to_string()
                ))
            })?;
            out.extend(parse(&f.display().to_string(), &text)?);
        }
    }
    if out.is_empty() {
        return Err(CliError::client("no objects passed to apply"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_and_lists_give_every_object() {
        let text = "kind: Pod\nmetadata: {name: a}\n---\n---\nkind: List\nitems:\n- {kind: Pod, metadata: {name: b}}\n- {kind: Pod, metadata: {name: c}}\n";
        let docs = parse("f.yaml", text).expect("parses");
        let names: Vec<&str> = docs
            .iter()
            .filter_map(|d| d.object.pointer("/metadata/name").and_then(Value::as_str))
            .collect();
        assert_eq!(names, vec!["a", "b", "c"]);
    }

    #[test]
    fn syntax_errors_name_the_file_line_and_column() {
        let e = parse("bad.yaml", "kind: Pod\nmetadata:\n  name: [a\n").expect_err("bad");
        let text = e.to_string();
        assert!(
            text.starts_with("error: error parsing bad.yaml at line"),
            "{text}"
        );
        assert!(text.contains("column"), "{text}");
        let e = parse("s.yaml", "just a string").expect_err("not a mapping");
        assert!(e.to_string().contains("not a string"), "{e}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Any text, YAML- or JSON-looking: objects, or an error naming the
        /// file (and, for syntax, the line and column); never a panic.
        #[test]
        fn any_text_gives_objects_or_an_error_naming_the_file(
            text in "([a-z]{1,6}: ?(\\{|\\[|\"|[a-z0-9 ]{0,6}|-|\\}|\\])?\n|---\n|  - |\\{|\\}|\\[|\\]|\"|:|,|&a|\\*a|!!|\t){0,24}"
        ) {
            match parse("f.yaml", &text) {
                Ok(docs) => {
                    for d in docs {
                        proptest::prop_assert!(d.object.is_object());
                    }
                }
                Err(CliError::Client(m)) => {
                    proptest::prop_assert!(m.starts_with("error parsing f.yaml"), "{m}");
                }
                Err(other) => proptest::prop_assert!(false, "{other}"),
            }
        }

        /// Any JSON document parses to what it says.
        #[test]
        fn json_documents_read_as_json(
            keys in proptest::collection::vec("[a-z]{1,5}", 0..5),
            n in proptest::prelude::any::<i64>(),
        ) {
            let object: serde_json::Map<String, Value> =
                keys.iter().map(|k| (k.clone(), Value::from(n))).collect();
            let text = Value::Object(object.clone()).to_string();
            let docs = parse("f.json", &text).expect("JSON is YAML");
            if object.is_empty() {
                proptest::prop_assert!(docs.len() <= 1);
            } else {
                proptest::prop_assert_eq!(&docs[0].object, &Value::Object(object));
            }
        }
    }
}
