//! `csd`: the command line of the csd computational storage device. The commands live in
//! [`cli`]; this file only hands the process over to it.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
