//! Every manifest in `examples/` reads, parses as its kind and passes the
//! API's validation, as `mkctl apply -f examples/` would send it.

use anyhow::{Result, bail};
use master::objects::Object;

#[test]
fn every_example_is_a_valid_object() -> Result<()> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let docs = cli::manifest::read(&[dir.to_string()], true)?;
    let mut kinds = Vec::new();
    for doc in docs {
        let object = match Object::parse(doc.object) {
            Ok(o) => o,
            Err(e) => bail!("{}: {e}", doc.source),
        };
        if let Err(e) = object.validate() {
            bail!("{}: {e}", doc.source);
        }
        kinds.push(object.kind().to_string());
    }
    kinds.sort();
    assert_eq!(
        kinds,
        ["Deployment", "Job", "PodDisruptionBudget"],
        "the examples hold a Deployment, a Job and a budget"
    );
    Ok(())
}
