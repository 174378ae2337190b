//! Checks of the tree itself: formatting, README and CI agreeing, the codemap naming every
//! file of the library, the tests and the test server, the invariants that are one grep
//! each, and no leftovers.

use std::{
    fs,
    path::{Path, PathBuf},
};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if !path.ends_with("target") && !path.ends_with(".git") {
                files_under(&path, out);
            }
        } else {
            out.push(path);
        }
    }
}

fn sources() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["src", "macros/src", "tests", "examples", "test-server/src"] {
        files_under(&root().join(dir), &mut files);
    }
    files.retain(|f| f.extension().is_some_and(|e| e == "rs"));
    files
}

#[test]
fn code_is_formatted() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args(["fmt", "--all", "--check"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "run `cargo fmt --all`:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn readme_starts_with_the_tour_and_the_test_command_that_ci_runs() {
    let readme = fs::read_to_string(root().join("README.md")).unwrap();
    let first_block = readme.split("```").nth(1).expect("a code block");
    assert!(
        first_block.contains("cargo run --example tour"),
        "{first_block}"
    );
    assert!(
        first_block.contains("cargo test --workspace"),
        "{first_block}"
    );
    let ci = fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l.trim() == "cargo test --workspace"),
        "{ci}"
    );
}

/// Every file of `src/`, `tests/` and `test-server/` is named in ARCHITECTURE.md's code
/// map, or lies in a folder named there below the top one (`tests/ui/`: the cases of one
/// test).
#[test]
fn the_codemap_names_every_source_file() {
    let architecture = fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let mut files = Vec::new();
    for dir in ["src", "tests", "test-server"] {
        files_under(&root().join(dir), &mut files);
    }
    for file in files {
        let relative = file
            .strip_prefix(root())
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let folder_named = Path::new(&relative)
            .ancestors()
            .skip(1)
            .filter(|dir| dir.components().count() >= 2)
            .any(|dir| architecture.contains(&format!("`{}/`", dir.display())));
        assert!(
            architecture.contains(&format!("`{relative}`")) || folder_named,
            "ARCHITECTURE.md does not name {relative}"
        );
    }
}

/// Nothing writes the process's own directory or environment: machine views and command
/// settings reach the child only, so concurrent tasks cannot step on each other.
#[test]
fn the_library_never_writes_the_process_cwd_or_environment() {
    let mut files = Vec::new();
    files_under(&root().join("src"), &mut files);
    files.retain(|f| f.extension().is_some_and(|e| e == "rs"));
    assert!(!files.is_empty());
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for banned in ["set_current_dir", "set_var", "remove_var"] {
                assert!(
                    !line.contains(banned),
                    "{banned} at {}:{}: set it on the child (a machine view or the command)",
                    file.display(),
                    n + 1
                );
            }
        }
    }
}

#[test]
fn no_leftovers_in_the_library() {
    for file in sources() {
        let text = fs::read_to_string(&file).unwrap();
        let library =
            !file.starts_with(root().join("tests")) && !file.starts_with(root().join("examples"));
        for (n, line) in text.lines().enumerate() {
            let at = format!("{}:{}", file.display(), n + 1);
            assert!(
                !line.ends_with(' ') && !line.contains('\t'),
                "trailing space or tab at {at}"
            );
            if library {
                for banned in ["todo!(", "unimplemented!(", "dbg!("] {
                    assert!(!line.contains(banned), "{banned} at {at}");
                }
            }
        }
    }
}

/// The plan is closed, and the command model knows nothing of how or where processes start.
///
/// - No backend (`src/local/*.rs`, `src/ssh/*.rs`, `src/mixed.rs`) reads a command: it
///   starts the `Plan` (`src/machine.rs`) from what the plan holds, which `exec` alone
///   builds from the commands. So no backend file calls `.spec()` or names `CommandSpec`.
/// - The command model (`src/command.rs`, `src/pipeline.rs`, `src/redirect.rs`) names no
///   `ssh`/`russh` item (no `ssh::` path, no `russh`). Its one entry into `exec` is `exec::Job`: a job is built with
///   `Job::new(stages, timeout)` and run with one of its calls (`run`, `read`, `output`,
///   `spawn`, `lines`, ...); every `exec::` in these files is followed by `Job`, so none
///   of exec's internals (`Mode`, `Started`, planning) is reached. Of `machine` it holds
///   only the `MachineRef` (every `machine::` is followed by `MachineRef`).
#[test]
fn backends_read_only_the_plan_and_the_command_model_only_calls_into_exec() {
    let src = root().join("src");
    let mut backends = vec![src.join("mixed.rs")];
    for dir in ["local", "ssh"] {
        for entry in fs::read_dir(src.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                backends.push(path);
            }
        }
    }
    for file in &backends {
        let text = fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for banned in [".spec()", "CommandSpec"] {
                assert!(
                    !line.contains(banned),
                    "{banned} in a backend, at {}:{}: read the plan instead",
                    file.display(),
                    n + 1
                );
            }
        }
    }
    for name in ["command.rs", "pipeline.rs", "redirect.rs"] {
        let file = src.join(name);
        let text = fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let at = format!("{}:{}", file.display(), n + 1);
            for banned in ["ssh::", "russh"] {
                assert!(
                    !line.contains(banned),
                    "{banned} in the command model, at {at}"
                );
            }
            for (module, allowed) in [("exec::", "Job"), ("machine::", "MachineRef")] {
                for (i, _) in line.match_indices(module) {
                    assert!(
                        line[i + module.len()..].starts_with(allowed),
                        "the command model reaches into `{module}` beyond `{allowed}`, at {at}"
                    );
                }
            }
        }
    }
}
