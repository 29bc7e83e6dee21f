//! `kiln info`: what kiln found about this machine: kernel, id maps, user
//! namespace limits, overlay and whiteout support, store path.

use clap::Args;
use kiln_runtime::idmap::IdMap;
use kiln_runtime::MapMode;

use super::Cli;

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  kiln info")]
pub struct InfoArgs {}

pub fn run(cli: &Cli, _args: &InfoArgs) -> anyhow::Result<i32> {
    let store = cli.root.clone().unwrap_or_else(crate::store::default_root);
    let scratch = if store.is_dir() { store.clone() } else { std::env::temp_dir() };
    let report = kiln_runtime::probe::gather(&scratch);
    let sysctl = |v: Option<u64>| v.map_or_else(|| "(not present)".to_string(), |n| n.to_string());
    let works = |r: &Result<(), String>| match r {
        Ok(()) => "yes".to_string(),
        Err(why) => format!("no ({why})"),
    };
    let mode = match &report.mode {
        MapMode::Root => "root (no user namespace needed)".to_string(),
        MapMode::Full { .. } => "full subuid/subgid map".to_string(),
        MapMode::Single => "single-id map (no subordinate ids: only id 0 exists inside)".to_string(),
        MapMode::Unavailable { reason } => format!("unavailable: {reason}"),
    };
    println!("kernel:                     {}", report.kernel);
    println!("user namespace:             {mode}");
    println!("uid map:                    {}", maps(&report.uid_maps));
    println!("gid map:                    {}", maps(&report.gid_maps));
    println!("max_user_namespaces:        {}", sysctl(report.max_user_namespaces));
    println!("unprivileged_userns_clone:  {}", sysctl(report.unprivileged_userns_clone));
    println!("apparmor_restrict_userns:   {}", sysctl(report.apparmor_restrict));
    println!("overlay in user namespace:  {}", works(&report.overlay_in_userns));
    println!("whiteouts (mknod c 0 0):    {}", works(&report.whiteouts));
    println!("store:                      {}", store.display());
    Ok(0)
}

fn maps(maps: &[IdMap]) -> String {
    if maps.is_empty() {
        return "(none: the host's ids)".to_string();
    }
    maps.iter().map(|m| format!("{} {} {}", m.container, m.host, m.size)).collect::<Vec<_>>().join(", ")
}
