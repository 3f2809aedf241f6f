//! The checked-in header `include/tessera.h` must be exactly what cbindgen generates from the
//! sources today, and must compile as strict C99.
//!
//! After changing the API, regenerate it with
//! `TESSERA_BLESS_HEADER=1 cargo test -p tessera-capi --test header`.

mod common;

use std::path::{Path, PathBuf};

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Generate the header from the sources into a temporary directory; return its path.
fn generate(tmp: &Path) -> PathBuf {
    let config = cbindgen::Config::from_file(crate_dir().join("cbindgen.toml"))
        .expect("cbindgen.toml parses");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir().join("src/lib.rs"))
        .generate()
        .expect("cbindgen generates the header");
    let out = tmp.join("tessera.h");
    bindings.write_to_file(&out);
    out
}

#[test]
fn header_matches_the_sources() {
    let tmp = common::TempDir::new("header");
    let fresh = std::fs::read_to_string(generate(tmp.path())).unwrap();
    let checked_in_path = crate_dir().join("include/tessera.h");
    if std::env::var("TESSERA_BLESS_HEADER").as_deref() == Ok("1") {
        std::fs::write(&checked_in_path, &fresh).unwrap();
        eprintln!("wrote {}", checked_in_path.display());
        return;
    }
    let checked_in = std::fs::read_to_string(&checked_in_path).unwrap_or_default();
    if fresh != checked_in {
        let line = fresh
            .lines()
            .zip(checked_in.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| fresh.lines().count().min(checked_in.lines().count()));
        panic!(
            "include/tessera.h is stale (first difference at line {}): regenerate it with \
             `TESSERA_BLESS_HEADER=1 cargo test -p tessera-capi --test header`",
            line + 1
        );
    }
}

#[test]
fn header_is_strict_c99() {
    let tmp = common::TempDir::new("c99");
    let src = tmp.path().join("only_header.c");
    std::fs::write(&src, "#include \"tessera.h\"\n").unwrap();
    for std in ["-std=c99", "-std=c11"] {
        common::run_ok(
            std::process::Command::new(common::cc())
                .args([
                    std,
                    "-pedantic",
                    "-Wall",
                    "-Wextra",
                    "-Werror",
                    "-fsyntax-only",
                ])
                .arg("-I")
                .arg(crate_dir().join("include"))
                .arg(&src),
            "compile the header alone",
        );
    }
}

#[test]
fn header_is_valid_cpp() {
    // cpp_compat wraps the declarations in extern "C"; make sure C++ accepts them too.
    let tmp = common::TempDir::new("cpp");
    let src = tmp.path().join("only_header.cpp");
    std::fs::write(&src, "#include \"tessera.h\"\n").unwrap();
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".into());
    if std::process::Command::new(&cxx)
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no C++ compiler ({cxx})");
        return;
    }
    common::run_ok(
        std::process::Command::new(&cxx)
            .args([
                "-std=c++11",
                "-pedantic",
                "-Wall",
                "-Werror",
                "-fsyntax-only",
            ])
            .arg("-I")
            .arg(crate_dir().join("include"))
            .arg(&src),
        "compile the header as C++",
    );
}
