//! Slow: a real distribution in RUN. A Debian base made by `debootstrap
//! --variant=minbase` from the machine's own apt mirror runs `apt-get update
//! && apt-get install`, and apt drops to its `_apt` user (uid 42), which only
//! the full subordinate id map allows.
//!
//! The mirror here may be a frozen snapshot behind an intercepting proxy, so
//! the base gets the host's apt sources, its `Check-Valid-Until`/`Check-Date`
//! (and proxy) settings and its extra CA certificates, as the host has them.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kiln_integration::*;

/// The package installed in the image: tiny, no dependencies beyond libc.
const PACKAGE: &str = "hello";

/// The (mirror, suite) of the first enabled Debian source on the host.
fn host_mirror() -> (String, String) {
    let mut found = Vec::new();
    if let Ok(text) = fs::read_to_string("/etc/apt/sources.list") {
        found.extend(one_line_sources(&text));
    }
    let mut files: Vec<_> = fs::read_dir("/etc/apt/sources.list.d")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for f in files {
        let text = fs::read_to_string(&f).unwrap_or_default();
        match f.extension().and_then(|e| e.to_str()) {
            Some("list") => found.extend(one_line_sources(&text)),
            Some("sources") => found.extend(deb822_sources(&text)),
            _ => {}
        }
    }
    found
        .into_iter()
        .find(|(uri, suite)| !uri.contains("security") && !suite.contains('-') && !suite.contains('/'))
        .expect("no Debian apt source (deb URI SUITE main) in /etc/apt/sources.list*")
}

/// `deb [opts] URI SUITE COMPONENTS…` lines.
fn one_line_sources(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix("deb ")?;
            let rest = if rest.trim_start().starts_with('[') { rest.split_once(']')?.1 } else { rest };
            let mut w = rest.split_whitespace();
            let (uri, suite) = (w.next()?, w.next()?);
            w.any(|c| c == "main").then(|| (uri.to_string(), suite.to_string()))
        })
        .collect()
}

/// deb822 stanzas: `Types: deb`, `URIs:`, `Suites:`, `Components: main`.
fn deb822_sources(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string())).unwrap_or_default()
        };
        if field("Enabled:") == "no"
            || !field("Types:").split_whitespace().any(|t| t == "deb")
            || !field("Components:").split_whitespace().any(|c| c == "main")
        {
            continue;
        }
        if let (Some(uri), Some(suite)) =
            (field("URIs:").split_whitespace().next(), field("Suites:").split_whitespace().next())
        {
            out.push((uri.to_string(), suite.to_string()));
        }
    }
    out
}

/// Runs a command as the harness's own user (root), panicking with its output on failure.
#[track_caller]
fn root_run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Installs debootstrap with apt-get when it is missing.
fn ensure_debootstrap() {
    if Path::new("/usr/sbin/debootstrap").exists() {
        return;
    }
    root_run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends", "debootstrap"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    );
}

/// Gives the base the host's apt view: sources, validity/date/proxy settings, CA certificates.
fn copy_host_apt_setup(base: &Path) {
    let _ = fs::remove_file(base.join("etc/apt/sources.list"));
    if let Ok(text) = fs::read_to_string("/etc/apt/sources.list") {
        fs::write(base.join("etc/apt/sources.list"), text).unwrap();
    }
    for e in fs::read_dir("/etc/apt/sources.list.d").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".list") || name.ends_with(".sources") {
            fs::copy(e.path(), base.join("etc/apt/sources.list.d").join(&name)).unwrap();
        }
    }
    let mut settings = String::new();
    let mut confs: Vec<_> = fs::read_dir("/etc/apt/apt.conf.d").unwrap().flatten().map(|e| e.path()).collect();
    confs.sort();
    for f in confs {
        for l in fs::read_to_string(&f).unwrap_or_default().lines() {
            if ["Check-Valid-Until", "Check-Date", "Proxy"].iter().any(|k| l.contains(k)) {
                settings.push_str(l);
                settings.push('\n');
            }
        }
    }
    fs::write(base.join("etc/apt/apt.conf.d/99host-settings"), settings).unwrap();
    let certs = Path::new("/usr/local/share/ca-certificates");
    let dest = base.join("usr/local/share/ca-certificates");
    fs::create_dir_all(&dest).unwrap();
    let mut bundle_extra = Vec::new();
    for e in fs::read_dir(certs).into_iter().flatten().flatten() {
        if e.path().extension().and_then(|x| x.to_str()) == Some("crt") {
            fs::copy(e.path(), dest.join(e.file_name())).unwrap();
            bundle_extra.extend(fs::read(e.path()).unwrap());
        }
    }
    // Without running update-ca-certificates in the base, append to its bundle if it has one.
    let bundle = base.join("etc/ssl/certs/ca-certificates.crt");
    if bundle.exists() && !bundle_extra.is_empty() {
        let mut b = fs::read(&bundle).unwrap();
        b.extend(bundle_extra);
        fs::write(&bundle, b).unwrap();
    }
}

#[test]
#[cfg_attr(not(kiln_slow), ignore = "slow; set KILN_SLOW_TESTS=1 to run")]
fn apt_get_install_on_a_debootstrapped_base() {
    if !is_root() {
        eprintln!("NOTICE: skipped: debootstrap needs root; run the integration tests as root");
        return;
    }
    apt_get_install(Sandbox::new(), "42\n");
}

/// Without a subuid range apt's drop to `_apt` is pretended (see
/// kiln_runtime::fake_ids): the same Dockerfile builds unchanged. RUN sees
/// the partial dir owned by root; the layer records `_apt` as its owner.
#[test]
#[cfg_attr(not(kiln_slow), ignore = "slow; set KILN_SLOW_TESTS=1 to run")]
fn apt_get_install_without_a_subuid_range() {
    if !is_root() {
        eprintln!("NOTICE: skipped: debootstrap needs root; run the integration tests as root");
        return;
    }
    let sb = Sandbox::without_subids().expect("as root, a user without a subuid range is created");
    apt_get_install(sb, "0\n");
}

/// Builds `FROM` a debootstrapped base: apt-get update and install, then
/// checks the package, apt's `_apt` ownership and that apt did drop to `_apt`.
/// `partial_owner_in_run`: what `stat -c %u` on apt's partial dir shows in RUN.
fn apt_get_install(sb: Sandbox, partial_owner_in_run: &str) {
    let started = Instant::now();
    ensure_debootstrap();
    let (mirror, suite) = host_mirror();
    let base = sb.path("base");
    let https = mirror.starts_with("https:");
    let mut deb = Command::new("/usr/sbin/debootstrap");
    deb.args(["--variant=minbase", "--arch", &host_arch()]);
    if https {
        deb.arg("--include=ca-certificates");
    }
    deb.arg(&suite).arg(&base).arg(&mirror);
    root_run(&mut deb);
    copy_host_apt_setup(&base);
    let after_debootstrap = started.elapsed();
    root_run(
        Command::new("tar")
            .args(["--numeric-owner", "--xattrs", "-C"])
            .arg(&base)
            .args(["-cf"])
            .arg(sb.path("ctx/base.tar"))
            .arg("."),
    );
    sb.give_tree(&sb.path("ctx/base.tar"));
    fs::remove_dir_all(&base).unwrap();

    let df = format!(
        "FROM scratch\n\
ADD base.tar /\n\
RUN apt-get update && apt-get install -y --no-install-recommends {PACKAGE} && {PACKAGE} > /hello.out \\\n\
 && stat -c %u /var/lib/apt/lists/partial > /partial-owner\n\
CMD [\"/usr/bin/{PACKAGE}\"]\n"
    );
    sb.dockerfile(&df);
    let ctx = sb.ctx();
    let built_at = Instant::now();
    let out = sb.kiln_slow(&["build", "-t", "deb", ctx.to_str().unwrap()], Duration::from_secs(1200));
    out.ok();
    let build_time = built_at.elapsed();
    assert!(
        !out.stdout.contains("unsandboxed as root") && !out.stderr.contains("unsandboxed as root"),
        "apt could not drop to _apt\n{}",
        out.transcript()
    );
    let img = sb.image("deb");
    assert_eq!(img.file_str("hello.out"), "Hello, world!\n");
    assert_eq!(img.file_str("partial-owner"), partial_owner_in_run, "apt's partial dir as RUN sees it");
    let status = img.file_str("var/lib/dpkg/status");
    assert!(
        status.contains(&format!("Package: {PACKAGE}\nStatus: install ok installed")),
        "dpkg does not list {PACKAGE}"
    );
    let partial = img.entry("var/lib/apt/lists/partial").expect("apt's lists/partial dir");
    assert_eq!(partial.uid, 42, "owner of /var/lib/apt/lists/partial in the layer");
    eprintln!(
        "TIMING: debootstrap {suite} from {mirror}: {after_debootstrap:?}; kiln build (ADD + apt-get): {build_time:?}; total {:?}",
        started.elapsed()
    );
}
