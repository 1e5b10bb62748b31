//! The chaos run's short form (`scripts/chaos.sh --short`): a 2,000-customer campaign through
//! a fleet killed every 3 s, Redis killed once, 30% provider errors, and seed 001 requests
//! whose publisher died between mark and publish. The script exits non-zero if any customer is
//! unaccounted for, reached twice, or a request is left stuck.

use std::process::Command;

#[test]
fn the_short_chaos_run_keeps_every_promise() {
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_herald"))
        .parent()
        .unwrap()
        .to_path_buf();
    let out = Command::new("bash")
        .arg(crate::harness::repo_file("scripts/chaos.sh"))
        .arg("--short")
        .env("HERALD_BIN_DIR", &bin_dir)
        .current_dir(crate::harness::repo_file(""))
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "chaos run failed:\n{stdout}\n{}",
        stderr.lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
    assert!(stdout.contains("every promise held"), "{stdout}");
    assert!(
        stdout.contains("redis restarts 1"),
        "Redis was killed once: {stdout}"
    );
}
