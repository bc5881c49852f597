use std::process::ExitCode;

use berth::runtime::{exec, monitor, zygote};

fn main() -> ExitCode {
    // The helper modes are dispatched before anything else runs (no threads, no runtime): the
    // mode's name, then the fd number of its channel.
    let args: Vec<String> = std::env::args().take(3).collect();
    let fd = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    match args.get(1).map(String::as_str) {
        Some(monitor::MONITOR_ARG) => std::process::exit(monitor::monitor_main(fd)),
        Some(exec::EXEC_ARG) => std::process::exit(exec::exec_main(fd)),
        Some(zygote::ZYGOTE_ARG) => std::process::exit(zygote::zygote_main(fd)),
        _ => berth::cli::main(),
    }
}
