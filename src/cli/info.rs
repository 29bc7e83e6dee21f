//! `kiln info`: what kiln found about this machine: kernel, id maps, user
//! namespace limits, overlay and whiteout support, the private network's
//! forwarder, store path.

use clap::Args;
use kiln_runtime::idmap::IdMap;
use kiln_runtime::MapMode;

use super::Cli;

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  kiln info")]
pub struct InfoArgs {}

pub fn run(cli: &Cli, _args: &InfoArgs) -> anyhow::Result<i32> {
    let store = cli.root.clone().unwrap_or_else(kiln::store::default_root);
    let scratch = if store.is_dir() { store.clone() } else { std::env::temp_dir() };
    let report = kiln_runtime::probe::gather(&scratch);
    let sysctl = |v: Option<u64>| v.map_or_else(|| "(not present)".to_string(), |n| n.to_string());
    let works = |r: &Result<(), String>| match r {
        Ok(()) => "yes".to_string(),
        Err(why) => format!("no ({why})"),
    };
    let mode = match &report.mode {
        MapMode::Root => "root (no user namespace needed)".to_string(),
        // Root without CAP_SYS_ADMIN: an unprivileged container's root.
        MapMode::Full { .. } if nix::unistd::Uid::effective().is_root() => {
            "full map of the container's ids, one to one (root without CAP_SYS_ADMIN)".to_string()
        }
        MapMode::Full { .. } => "full subuid/subgid map".to_string(),
        MapMode::Single => "single-id map (no subordinate ids: only id 0 exists inside)".to_string(),
        MapMode::Unavailable { reason } => format!("unavailable: {reason}"),
    };
    println!("kernel:                     {}", report.kernel);
    println!("user namespace:             {mode}");
    if matches!(report.mode, MapMode::Single) {
        // The first range no user has yet, so the command can be run as is.
        let facts = kiln_runtime::idmap::gather_facts(|| Ok(()));
        let fix = kiln_runtime::idmap::subid_fix(facts.user_name.as_deref(), &facts.taken_subids);
        println!("subordinate ids:            none; for a full map run: {fix}");
    }
    println!("uid map:                    {}", maps(&report.uid_maps));
    println!("gid map:                    {}", maps(&report.gid_maps));
    println!("max_user_namespaces:        {}", sysctl(report.max_user_namespaces));
    println!("unprivileged_userns_clone:  {}", sysctl(report.unprivileged_userns_clone));
    println!("apparmor_restrict_userns:   {}", sysctl(report.apparmor_restrict));
    println!("overlay in user namespace:  {}", works(&report.overlay_in_userns));
    println!("whiteouts (mknod c 0 0):    {}", works(&report.whiteouts));
    println!("storage driver:             {}", storage_driver(&report, &scratch));
    println!("private network:            {}", private_network());
    let size = if store.join("index.json").exists() {
        kiln::store::Store::open(&store)
            .and_then(|s| s.disk_usage())
            .map_or_else(|e| format!("unknown ({e})"), |u| kiln::humanize::human_size(u.total))
    } else {
        "(not created yet)".to_string()
    };
    println!("store:                      {} ({})", store.display(), size);
    Ok(0)
}

/// The driver a build would pick here: `KILN_STORAGE_DRIVER`, else kernel
/// overlay where it mounts (in the user namespace when not root), else
/// fuse-overlayfs where /dev/fuse and the binary are usable, else vfs.
fn storage_driver(report: &kiln_runtime::probe::Report, scratch: &std::path::Path) -> String {
    if let Ok(forced) = std::env::var("KILN_STORAGE_DRIVER") {
        return format!("{forced} (from KILN_STORAGE_DRIVER)");
    }
    if matches!(report.mode, MapMode::Root) {
        return kiln_overlay::mount::detect_driver_in(scratch).to_string();
    }
    if report.overlay_in_userns.is_ok() {
        return "overlay".to_string();
    }
    let device = std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse").is_ok();
    let program =
        std::process::Command::new("fuse-overlayfs").arg("--version").output().is_ok_and(|o| o.status.success());
    match (device, program) {
        (true, true) => "fuse-overlayfs",
        (_, false) => "vfs (copies every layer: slow; install fuse-overlayfs)",
        // Typically a container started without the device.
        (false, true) => {
            "vfs (copies every layer: slow; /dev/fuse cannot be opened: in a container, pass --device /dev/fuse)"
        }
    }
    .to_string()
}

/// What `--network private` and `kiln run -p` would use: the forwarder
/// found on PATH (and the others), or why they cannot work and the fix.
fn private_network() -> String {
    use kiln_runtime::network;
    let chosen = match network::find() {
        Ok(f) => f,
        Err(e) => return format!("unavailable: {e}"),
    };
    let others: Vec<String> = network::available()
        .into_iter()
        .filter(|f| f.kind != chosen.kind)
        .map(|f| format!("{} ({})", f.kind.program(), f.path.display()))
        .collect();
    let mut text = format!("{} ({})", chosen.kind.program(), chosen.path.display());
    if std::env::var_os(network::HELPER_ENV).is_some() {
        text.push_str(&format!(", from {}", network::HELPER_ENV));
    }
    if !others.is_empty() {
        text.push_str(&format!("; also {}", others.join(", ")));
    }
    if let Err(e) = network::tun_usable() {
        text.push_str(&format!("; but {e}"));
    }
    text
}

fn maps(maps: &[IdMap]) -> String {
    if maps.is_empty() {
        return "(none: the host's ids)".to_string();
    }
    maps.iter().map(|m| format!("{} {} {}", m.container, m.host, m.size)).collect::<Vec<_>>().join(", ")
}
