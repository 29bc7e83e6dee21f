use clap::Parser;

fn main() {
    let cli = kiln::cli::Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .init();
    let code = match kiln::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprint!("{}", kiln::report::render(&err));
            1
        }
    };
    std::process::exit(code);
}
