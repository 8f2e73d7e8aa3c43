//! The master's modules form no import loop: for every top-level module
//! (`service`, `leader`, `store`, ...), the modules it names as `crate::X`
//! never name it back, directly or through others. Run with
//! `cargo test -p master --test imports`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules its files name.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src is readable") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src");
            let top = rel
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .unwrap_or("")
                .trim_end_matches(".rs")
                .to_string();
            if top == "lib" || top == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("a source file");
            let names = g.entry(top.clone()).or_default();
            for (i, _) in text.match_indices("crate::") {
                let rest = &text[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != top {
                    names.insert(name);
                }
            }
        }
    }
    g
}

/// A loop through `path[0]`, continuing from `from`, if there is one.
fn find_loop(
    g: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    for next in g.get(from).into_iter().flatten() {
        if path.first() == Some(next) {
            let mut cycle = path.clone();
            cycle.push(next.clone());
            return Some(cycle);
        }
        if path.contains(next) {
            continue;
        }
        path.push(next.clone());
        if let Some(c) = find_loop(g, next, path) {
            return Some(c);
        }
        path.pop();
    }
    None
}

#[test]
fn no_module_of_the_master_imports_one_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = graph(&src);
    assert!(
        g.contains_key("service") && g.contains_key("leader"),
        "{g:?}"
    );
    for module in g.keys() {
        let mut path = vec![module.clone()];
        if let Some(cycle) = find_loop(&g, module, &mut path) {
            panic!("an import loop: {}", cycle.join(" → "));
        }
    }
}
