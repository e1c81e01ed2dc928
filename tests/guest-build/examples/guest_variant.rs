//! Builds a test variant of the policy component (`fault-loop`, `fault-alloc`, `wit-v0_3`, ...)
//! into target/guest-variants and prints its path: how the Python tests get the same
//! misbehaving builds as the Rust sandbox tests.

fn main() -> std::process::ExitCode {
    let features = std::env::args().nth(1).unwrap_or_default();
    match citus_ha_guest_build::policy_variant(&features) {
        Ok(path) => {
            println!("{}", path.display());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("guest_variant {features}: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
