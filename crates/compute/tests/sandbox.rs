//! Real WASI modules (examples/wasm, built by scripts/build-examples.sh, which these tests run)
//! in the sandbox: a job reads its inputs and writes its outputs, and nothing else — no file
//! outside its inputs, no writing into them, no network.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use weft_compute::runtime::{Limits, RunSpec, Runtime};

/// The example modules, built once per test binary.
fn examples() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let dir = tempfile::tempdir().unwrap().keep();
        let status = std::process::Command::new(repo.join("scripts/build-examples.sh"))
            .env("WEFT_EXAMPLES_DIR", &dir)
            .status()
            .expect("scripts/build-examples.sh runs");
        assert!(status.success(), "building the example jobs failed");
        dir
    })
}

fn spec(job: &Path, inputs: Option<PathBuf>) -> RunSpec {
    RunSpec {
        args: vec![],
        env: vec![],
        inputs,
        output: job.join("out"),
        stdout: job.join("stdout"),
        stderr: job.join("stderr"),
        limits: Limits {
            fuel: 2_000_000_000,
            memory: 64 << 20,
            deadline: Duration::from_secs(20),
        },
        profile: weft_compute::runtime::Profile::Native,
        cancel: None,
    }
}

#[test]
fn wordcount_reads_its_inputs_and_writes_its_output() {
    let rt = Runtime::new().unwrap();
    let bytes = std::fs::read(examples().join("wordcount.wasm")).unwrap();
    let module = rt.module(&bytes).unwrap();
    let job = tempfile::tempdir().unwrap();
    let inputs = job.path().join("in");
    std::fs::create_dir_all(&inputs).unwrap();
    std::fs::write(inputs.join("a.txt"), "one two three\nfour five\n").unwrap();
    std::fs::write(inputs.join("b.txt"), "six\n").unwrap();
    let out = rt
        .run("wordcount", &module, &spec(job.path(), Some(inputs)))
        .unwrap();
    assert_eq!(out.exit_code, 0);
    let stdout = std::fs::read_to_string(job.path().join("stdout")).unwrap();
    let total = stdout.lines().last().unwrap();
    assert_eq!(
        total.split_whitespace().collect::<Vec<_>>(),
        ["3", "6", "28", "total"],
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(job.path().join("out/counts.txt")).unwrap(),
        stdout
    );
    // The second run of the same bytes uses the compiled module.
    assert!(rt.is_cached(&bytes));
}

#[test]
fn a_job_reaches_no_file_but_its_inputs_and_outputs_and_no_network() {
    let rt = Runtime::new().unwrap();
    let module = rt
        .module(&std::fs::read(examples().join("probe.wasm")).unwrap())
        .unwrap();
    let job = tempfile::tempdir().unwrap();
    let inputs = job.path().join("in");
    std::fs::create_dir_all(&inputs).unwrap();
    std::fs::write(inputs.join("input.txt"), "given").unwrap();
    let out = rt
        .run("probe", &module, &spec(job.path(), Some(inputs.clone())))
        .unwrap();
    assert_eq!(out.exit_code, 0);
    let report = std::fs::read_to_string(job.path().join("stdout")).unwrap();
    println!("{report}");
    let verdict = |what: &str| {
        report
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{what}: ")))
            .unwrap_or_else(|| panic!("no {what:?} in {report}"))
            .to_string()
    };
    for denied in [
        "read /etc/passwd",
        "read /in/../etc/passwd",
        "read /in/../../etc/passwd",
        "list /",
        "write /in/planted",
        "write /tmp/planted",
        "connect 127.0.0.1:22",
        "bind 127.0.0.1:0",
    ] {
        assert!(verdict(denied).starts_with("denied"), "{denied}: {report}");
    }
    assert_eq!(verdict("read /in/input.txt"), "allowed");
    assert_eq!(verdict("write /out/result.txt"), "allowed");
    assert!(!inputs.join("planted").exists());
    assert_eq!(
        std::fs::read(job.path().join("out/result.txt")).unwrap(),
        b"ok"
    );
}
