use super::export::{index_entry, merge_entry};
use super::*;

fn entry(digest: &str, name: Option<&str>) -> Descriptor {
    index_entry(&name.map(str::to_string), &Descriptor::new(crate::image::manifest::OCI_MANIFEST, digest.into(), 1))
}

#[test]
fn selects_by_tag_or_uniqueness() {
    let mut index = Index::default();
    assert!(matches!(select_entry(&index, None, "x", None), Err(TransportError::NoImages(_))));
    index.manifests = vec![entry("sha256:a", Some("v1")), entry("sha256:a", Some("v2"))];
    assert_eq!(select_entry(&index, None, "x", None).unwrap().digest, "sha256:a");
    index.manifests.push(entry("sha256:b", Some("v3")));
    let err = select_entry(&index, None, "x", None).unwrap_err();
    assert!(err.to_string().contains("v1, v2, v3"), "{err}");
    assert_eq!(select_entry(&index, Some("v3"), "x", None).unwrap().digest, "sha256:b");
    let err = select_entry(&index, Some("nope"), "x", None).unwrap_err();
    assert!(matches!(err, TransportError::TagNotFound { .. }));
}

#[test]
fn untagged_entries_per_platform_are_an_index() {
    let mut index = Index::default();
    for (digest, arch) in [("sha256:a", "amd64"), ("sha256:b", "arm64")] {
        let mut d = entry(digest, None);
        d.platform = Some(crate::image::manifest::Platform {
            os: "linux".into(),
            architecture: arch.into(),
            ..Default::default()
        });
        index.manifests.push(d);
    }
    let arm64 = Platform::parse("linux/arm64").unwrap();
    assert_eq!(select_entry(&index, None, "x", Some(&arm64)).unwrap().digest, "sha256:b");
    let s390x = Platform::parse("linux/s390x").unwrap();
    let err = select_entry(&index, None, "x", Some(&s390x)).unwrap_err().to_string();
    assert!(err.contains("no match for platform") && err.contains("linux/amd64, linux/arm64"), "{err}");
    // Without a platform asked for, one entry is taken only if it is the host's.
    let mut one = index.clone();
    one.manifests.truncate(1);
    assert_eq!(pick_platform(&one, "x", None).unwrap().digest, "sha256:a");
    assert!(pick_platform(&one, "x", Some(&arm64)).is_err(), "asked for arm64, an amd64-only index is an error");
}

#[test]
fn merge_replaces_same_ref_name() {
    let mut index = Index::default();
    merge_entry(&mut index, entry("sha256:a", Some("v1")));
    merge_entry(&mut index, entry("sha256:b", Some("v1")));
    merge_entry(&mut index, entry("sha256:c", None));
    merge_entry(&mut index, entry("sha256:c", None));
    let got: Vec<_> = index.manifests.iter().map(|d| (d.digest.as_str(), d.ref_name())).collect();
    assert_eq!(got, vec![("sha256:b", Some("v1")), ("sha256:c", None)]);
}
