use citus_ha::cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
