//! The `kickq` binary: everything it does is `kickq::cli::main`, so the CLI's modules stay private to the library.

fn main() -> std::process::ExitCode {
    kickq::cli::main()
}
