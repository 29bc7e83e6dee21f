use std::collections::BTreeMap;

use super::*;

fn config(entrypoint: &[&str], cmd: &[&str]) -> ContainerConfig {
    let v = |a: &[&str]| (!a.is_empty()).then(|| a.iter().map(|s| s.to_string()).collect());
    ContainerConfig { entrypoint: v(entrypoint), cmd: v(cmd), ..Default::default() }
}

fn env_map(env: &[String]) -> BTreeMap<&str, &str> {
    env.iter().map(|e| e.split_once('=').unwrap_or((e, ""))).collect()
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_command_line_definition_is_valid() {
    use clap::CommandFactory;
    crate::cli::Cli::command().debug_assert();
    let cli = <crate::cli::Cli as clap::Parser>::try_parse_from([
        "kiln", "run", "-it", "-v", "/a:/b:ro", "-e", "X=1", "img", "sh", "-c", "exit 7", "-v",
    ])
    .unwrap();
    let crate::cli::Command::Run(args) = cli.command else { panic!("not run") };
    assert!(args.interactive && args.tty);
    assert_eq!(args.volumes, ["/a:/b:ro"]);
    assert_eq!(args.image, "img");
    assert_eq!(args.command, ["sh", "-c", "exit 7", "-v"], "flags after IMAGE belong to the command");
}

#[test]
fn publish_implies_a_private_network() {
    assert_eq!(network_mode(None, false).unwrap(), Network::Host);
    assert_eq!(network_mode(None, true).unwrap(), Network::Private);
    assert_eq!(network_mode(Some(Network::Private), true).unwrap(), Network::Private);
    assert_eq!(network_mode(Some(Network::None), false).unwrap(), Network::None);
    let err = network_mode(Some(Network::Host), true).unwrap_err();
    assert!(err.to_string().contains("--network host"), "{err}");
    assert!(network_mode(Some(Network::None), true).is_err());
    let cli = <crate::cli::Cli as clap::Parser>::try_parse_from([
        "kiln",
        "run",
        "-p",
        "8080:80",
        "-p",
        "127.0.0.1:5353:53/udp",
        "--cap-drop",
        "NET_RAW",
        "site",
    ])
    .unwrap();
    let crate::cli::Command::Run(args) = cli.command else { panic!("not run") };
    assert_eq!(args.publish.len(), 2);
    assert_eq!(args.publish[1].to_string(), "127.0.0.1:5353:53/udp");
    assert_eq!(args.cap_drop, ["NET_RAW"]);
    assert!(<crate::cli::Cli as clap::Parser>::try_parse_from(["kiln", "run", "--network", "bridge", "x"]).is_err());
}

#[test]
fn command_line_follows_podman() {
    let c = config(&["/entry", "-x"], &["default"]);
    assert_eq!(command_line(&c, None, &[]).unwrap(), ["/entry", "-x", "default"]);
    assert_eq!(command_line(&c, None, &strings(&["a", "b"])).unwrap(), ["/entry", "-x", "a", "b"]);
    // --entrypoint drops the image's CMD unless args are given.
    assert_eq!(command_line(&c, Some(&strings(&["/other"])), &[]).unwrap(), ["/other"]);
    assert_eq!(command_line(&c, Some(&strings(&["/other"])), &strings(&["z"])).unwrap(), ["/other", "z"]);
    // An empty --entrypoint clears it: the args alone run.
    assert_eq!(command_line(&c, Some(&[]), &strings(&["sh"])).unwrap(), ["sh"]);
    let only_cmd = config(&[], &["sh", "-c", "true"]);
    assert_eq!(command_line(&only_cmd, None, &[]).unwrap(), ["sh", "-c", "true"]);
    assert!(matches!(command_line(&config(&[], &[]), None, &[]), Err(RunCmdError::NoCommand)));
    assert!(matches!(command_line(&c, Some(&[]), &[]), Err(RunCmdError::NoCommand)));
}

#[test]
fn entrypoint_forms() {
    assert_eq!(parse_entrypoint("/bin/sh").unwrap(), ["/bin/sh"]);
    assert_eq!(parse_entrypoint(r#"["/bin/sh","-c"]"#).unwrap(), ["/bin/sh", "-c"]);
    assert!(parse_entrypoint("").unwrap().is_empty());
    assert!(parse_entrypoint("[oops").is_err());
}

#[test]
fn environment_layers() {
    let image = strings(&["A=1", "HOME=/srv", "B=x=y"]);
    let env = environment(&image, &[("A".into(), "2".into()), ("C".into(), "".into())], "h1", "/root", true);
    let m = env_map(&env);
    assert_eq!(m["A"], "2");
    assert_eq!(m["B"], "x=y");
    assert_eq!(m["C"], "");
    assert_eq!(m["HOME"], "/srv", "the image's HOME wins over passwd");
    assert_eq!(m["PATH"], DEFAULT_PATH);
    assert_eq!(m["TERM"], "xterm");
    assert_eq!(m["HOSTNAME"], "h1");
    let env = environment(&strings(&["PATH=/x"]), &[], "h", "/home/u", false);
    let m = env_map(&env);
    assert_eq!(m["PATH"], "/x");
    assert_eq!(m["HOME"], "/home/u");
    assert!(!m.contains_key("TERM"));
    // -e overrides even the computed ones.
    let env = environment(&[], &[("HOME".into(), "/h".into()), ("TERM".into(), "dumb".into())], "h", "/", true);
    assert_eq!(env_map(&env)["HOME"], "/h");
    assert_eq!(env_map(&env)["TERM"], "dumb");
}

#[test]
fn env_flags_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("env");
    fs::write(&file, "# comment\n\nX=from-file\nY=1\nFROMHOST\nMISSING\n").unwrap();
    let lookup = |k: &str| (k == "FROMHOST" || k == "Z").then(|| format!("host-{k}"));
    let got = env_overrides(&strings(&["Y=2", "Z", "NOPE"]), &[file], lookup).unwrap();
    assert_eq!(
        got,
        [("X", "from-file"), ("Y", "1"), ("FROMHOST", "host-FROMHOST"), ("Y", "2"), ("Z", "host-Z")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    assert!(env_overrides(&strings(&["=v"]), &[], |_| None).is_err());
    assert!(env_overrides(&[], &[dir.path().join("none")], |_| None).is_err());
}

#[test]
fn volume_specs() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().to_str().unwrap();
    let m = parse_volume(&format!("{host}:/data")).unwrap();
    assert_eq!((m.source.as_path(), m.target.as_str(), m.readonly), (dir.path(), "/data", false));
    assert!(parse_volume(&format!("{host}:/data/../x/:ro")).unwrap().readonly);
    assert_eq!(parse_volume(&format!("{host}:/data/../x/:ro")).unwrap().target, "/x");
    assert!(!parse_volume(&format!("{host}:/d:rw,z")).unwrap().readonly);
    assert!(matches!(parse_volume(&format!("{host}:/d:bogus")), Err(RunCmdError::VolumeOption { .. })));
    assert!(matches!(parse_volume(&format!("{host}:rel")), Err(RunCmdError::VolumeTarget(_))));
    assert!(matches!(parse_volume("name:/d"), Err(RunCmdError::NamedVolume(_))));
    assert!(matches!(parse_volume("/no/such/dir/kiln:/d"), Err(RunCmdError::VolumeSource { .. })));
    assert!(matches!(parse_volume("/a"), Err(RunCmdError::VolumeSyntax(_))));
}
