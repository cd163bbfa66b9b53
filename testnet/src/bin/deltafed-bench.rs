//! `deltafed-bench`: the benchmark suite (`make bench`). See docs/BENCHMARKS.md.

fn main() -> std::process::ExitCode {
    match deltafed_testnet::bench::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
