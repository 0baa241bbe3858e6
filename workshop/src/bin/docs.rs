//! `make docs`: copies each included region into the README and docs/lessons/*.md.
//! `docs --check` changes nothing and exits 1, naming the files, when one is stale.

use std::path::PathBuf;
use std::process::ExitCode;

use workshop::docs;

fn main() -> ExitCode {
    let check = std::env::args().any(|a| a == "--check");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut status = ExitCode::SUCCESS;
    for file in docs::targets(&root) {
        let shown = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .display()
            .to_string();
        match docs::render_file(&root, &file) {
            Err(e) => {
                eprintln!("docs: {e}");
                status = ExitCode::FAILURE;
            }
            Ok((now, rendered)) if now != rendered => {
                if check {
                    eprintln!("docs: {shown} is stale: run `make docs`");
                    status = ExitCode::FAILURE;
                } else if let Err(e) = std::fs::write(&file, rendered) {
                    eprintln!("docs: {shown}: {e}");
                    status = ExitCode::FAILURE;
                } else {
                    println!("docs: {shown} updated");
                }
            }
            Ok(_) => {}
        }
    }
    status
}
