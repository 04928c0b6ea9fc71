//! The `vagonfs` binary: parses the command line and hands over to [`vagonfs::cli`].

fn main() -> std::process::ExitCode {
    vagonfs::cli::main()
}
