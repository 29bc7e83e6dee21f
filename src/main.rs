use clap::Parser;

mod cli;
mod report;

fn main() {
    // Hidden helper modes (entering namespaces, running a RUN step) come
    // first: they must run before clap, logging or any thread exists.
    if let Some(code) = kiln_runtime::dispatch_helper() {
        std::process::exit(code);
    }
    kiln_runtime::default_sigpipe();
    let cli = cli::Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        // Around the live progress view, when one is drawn.
        .target(env_logger::Target::Pipe(Box::new(cli::progress::LogWriter)))
        .init();
    let store = cli.root.clone().unwrap_or_else(kiln::store::default_root);
    let result = cli::run(cli);
    if let Some(code) = cli::interrupted_exit(&result) {
        std::process::exit(code);
    }
    let code = match result {
        Ok(code) => code,
        Err(err) => {
            eprint!("{}", report::render(&err));
            eprint!("{}", report::disk_full_hint(&err, &store).unwrap_or_default());
            1
        }
    };
    std::process::exit(code);
}
