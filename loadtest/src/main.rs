//! The chatnode load-test harness. Its scenarios (fanout, mixed, idle, burst) are built by the
//! load-test issue; until then the binary explains that and exits with an error code.

fn main() {
    eprintln!("chatnode-loadtest: no scenario is implemented yet (see the load-test issue)");
    std::process::exit(2);
}
