//! Garbage collection: an object whose controlling owner no longer exists
//! is deleted (a deleted Deployment takes its ReplicaSets, and they their
//! pods), as Kubernetes' garbage collector does with background deletion.

use std::collections::HashSet;

use api::ObjectMeta;

/// Whether `meta`'s controller is missing from `live_uids` (objects without
/// a controller are never collected).
pub fn is_orphan<S: std::hash::BuildHasher>(
    meta: &ObjectMeta,
    live_uids: &HashSet<&str, S>,
) -> bool {
    meta.controller()
        .is_some_and(|o| !live_uids.contains(o.uid.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::OwnerReference;

    #[test]
    fn only_objects_with_a_missing_controller_are_orphans() {
        let mut owned = ObjectMeta::named("p");
        owned.owner_references.push(OwnerReference {
            kind: "ReplicaSet".into(),
            name: "rs".into(),
            uid: "u1".into(),
            controller: true,
        });
        let live: HashSet<&str> = ["u1"].into_iter().collect();
        assert!(!is_orphan(&owned, &live));
        assert!(is_orphan(&owned, &HashSet::<&str>::new()));
        assert!(!is_orphan(
            &ObjectMeta::named("free"),
            &HashSet::<&str>::new()
        ));
    }
}
