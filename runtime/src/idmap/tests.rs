use super::*;

const SUBUID: &str = "\
# comment
bob:200000:65536
alice:100000:65536
1001:300000:1000
alice:400000:10
broken line
alice:500000:0
";

#[test]
fn parses_every_range_by_name_or_uid() {
    let ranges = parse_subid(SUBUID, Some("alice"), 1001);
    assert_eq!(
        ranges,
        vec![
            SubIdRange { start: 100000, count: 65536 },
            SubIdRange { start: 300000, count: 1000 },
            SubIdRange { start: 400000, count: 10 },
        ]
    );
    assert!(parse_subid(SUBUID, Some("carol"), 1002).is_empty());
    assert_eq!(parse_subid(SUBUID, None, 1001), vec![SubIdRange { start: 300000, count: 1000 }]);
}

#[test]
fn full_map_puts_caller_at_zero_and_ranges_in_order() {
    let ranges = [SubIdRange { start: 100000, count: 65536 }, SubIdRange { start: 400000, count: 10 }];
    let maps = build_full_map(1000, &ranges);
    assert_eq!(
        maps,
        vec![
            IdMap { container: 0, host: 1000, size: 1 },
            IdMap { container: 1, host: 100000, size: 65536 },
            IdMap { container: 65537, host: 400000, size: 10 },
        ]
    );
    assert_eq!(format_maps(&maps), "0 1000 1\n1 100000 65536\n65537 400000 10\n");
    assert_eq!(parse_proc_map("         0       1000          1\n         1     100000      65536\n"), maps[..2]);
}

#[test]
fn full_map_never_overflows() {
    let maps = build_full_map(5, &[SubIdRange { start: 1, count: u32::MAX }, SubIdRange { start: 9, count: 9 }]);
    assert_eq!(maps.len(), 2);
    assert_eq!(maps[1].size, u32::MAX - 1);
}

fn user_facts() -> Facts {
    Facts {
        euid: 1000,
        egid: 1000,
        user_name: Some("alice".into()),
        max_user_namespaces: Some(1000),
        subuids: vec![SubIdRange { start: 100000, count: 65536 }],
        subgids: vec![SubIdRange { start: 100000, count: 65536 }],
        newuidmap: Some("/usr/bin/newuidmap".into()),
        newgidmap: Some("/usr/bin/newgidmap".into()),
        ..Facts::default()
    }
}

#[test]
fn ladder() {
    let facts = user_facts();
    let (mode, warning) = decide(&facts);
    assert!(matches!(&mode, MapMode::Full { uids, .. } if uids.len() == 2 && uids[1].size == 65536));
    assert!(warning.is_none());

    let root = Facts { euid: 0, cap_sys_admin: true, ..user_facts() };
    assert_eq!(decide(&root).0, MapMode::Root);
    // Root of a rootless container without CAP_SYS_ADMIN: its own ids, one to one.
    let own = vec![IdMap { container: 0, host: 1002, size: 1 }, IdMap { container: 1, host: 165536, size: 65536 }];
    let container_root = Facts { euid: 0, cap_sys_admin: false, own_uids: own.clone(), own_gids: own, ..user_facts() };
    let (mode, warning) = decide(&container_root);
    let same = vec![IdMap { container: 0, host: 0, size: 1 }, IdMap { container: 1, host: 1, size: 65536 }];
    assert_eq!(mode, MapMode::Full { uids: same.clone(), gids: same });
    assert!(warning.is_none());

    let no_range = Facts { subgids: vec![], ..user_facts() };
    let (mode, warning) = decide(&no_range);
    assert_eq!(mode, MapMode::Single);
    let warning = warning.unwrap();
    assert!(
        warning.contains("sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 alice"),
        "{warning}"
    );
    // Other users' ranges are skipped: the suggestion is the first free one.
    let taken = vec![SubIdRange { start: 100000, count: 65536 }, SubIdRange { start: 165536, count: 10 }];
    let crowded = Facts { subgids: vec![], taken_subids: taken, ..user_facts() };
    let warning = decide(&crowded).1.unwrap();
    assert!(warning.contains("--add-subuids 165546-231081 --add-subgids 165546-231081 alice"), "{warning}");

    let no_tool = Facts { newgidmap: None, ..user_facts() };
    let (mode, warning) = decide(&no_tool);
    assert_eq!(mode, MapMode::Single);
    assert!(warning.unwrap().contains("uidmap"));

    let disabled = Facts { max_user_namespaces: Some(0), ..user_facts() };
    let (mode, warning) = decide(&disabled);
    assert!(matches!(mode, MapMode::Unavailable { .. }));
    assert!(warning.unwrap().contains("sysctl -w user.max_user_namespaces"));

    let debian = Facts { unprivileged_userns_clone: Some(0), ..user_facts() };
    assert!(decide(&debian).1.unwrap().contains("kernel.unprivileged_userns_clone=1"));

    let apparmor = Facts { apparmor_restrict: Some(1), probe: Some(Err("EPERM".into())), ..user_facts() };
    let (mode, warning) = decide(&apparmor);
    assert!(matches!(mode, MapMode::Unavailable { .. }));
    assert!(warning.unwrap().contains("AppArmor"));
    // The restriction on with a working probe (kiln has a profile) is fine.
    let allowed = Facts { apparmor_restrict: Some(1), probe: Some(Ok(())), ..user_facts() };
    assert!(matches!(decide(&allowed).0, MapMode::Full { .. }));
}

#[test]
fn inside_reports_the_maps_in_effect() {
    let full = vec![IdMap { container: 0, host: 1000, size: 1 }, IdMap { container: 1, host: 100000, size: 65536 }];
    let facts = Facts { euid: 0, inside: Some((full.clone(), full.clone())), ..Facts::default() };
    assert_eq!(decide(&facts).0, MapMode::Full { uids: full.clone(), gids: full });
    let single = vec![IdMap { container: 0, host: 1000, size: 1 }];
    let facts = Facts { euid: 0, inside: Some((single.clone(), single)), ..Facts::default() };
    assert_eq!(decide(&facts), (MapMode::Single, None));
}

#[test]
fn first_free_subids_skips_every_taken_range() {
    let r = |start, count| SubIdRange { start, count };
    assert_eq!(first_free_subids(&[], 65536), Some(100000));
    // Below the minimum, or far above, leaves 100000 free.
    assert_eq!(first_free_subids(&[r(1000, 5000), r(500000, 65536)], 65536), Some(100000));
    // A hole too small is skipped; unsorted input; overlapping ranges.
    let taken = [r(300000, 65536), r(100000, 65536), r(165600, 100), r(165536, 200)];
    assert_eq!(first_free_subids(&taken, 65536), Some(165736));
    // A hole exactly big enough is used.
    assert_eq!(first_free_subids(&[r(100000, 10), r(165546, 10)], 65536), Some(100010));
    // No room left below 2^32.
    assert_eq!(first_free_subids(&[r(100000, u32::MAX - 100000)], 65536), None);
    let text = "alice:100000:65536\n# comment\nbob:165536:65536\nbad line\n";
    assert_eq!(parse_all_subids(text), vec![r(100000, 65536), r(165536, 65536)]);
}
