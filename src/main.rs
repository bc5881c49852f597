use std::process::ExitCode;

fn main() -> ExitCode {
    // The helper mode is dispatched before anything else runs (no threads, no runtime).
    let mut args = std::env::args();
    if args.nth(1).as_deref() == Some(berth::runtime::monitor::MONITOR_ARG) {
        let fd = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
        std::process::exit(berth::runtime::monitor::monitor_main(fd));
    }
    if std::env::args().nth(1).as_deref() == Some(berth::runtime::exec::EXEC_ARG) {
        let fd = std::env::args()
            .nth(2)
            .and_then(|a| a.parse().ok())
            .unwrap_or(3);
        std::process::exit(berth::runtime::exec::exec_main(fd));
    }
    berth::cli::main()
}
